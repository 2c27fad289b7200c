import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import corpora  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    return corpora.minilm_dir()


@pytest.fixture(scope="session")
def kjv() -> list[str]:
    return corpora.kjv_verses()


GCS_PROJECT_NUMBER = "123456789"


@pytest.fixture
def gcs_emulator(monkeypatch):
    """A real GCS server (gcp-storage-emulator) on loopback; google-cloud-storage talks to it (our code too:
    STORAGE_EMULATOR_HOST points every client there). Bucket ``pipelines`` exists."""
    import socket  # noqa: PLC0415

    from gcp_storage_emulator.server import create_server  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, project_number=GCS_PROJECT_NUMBER)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    from google.cloud import storage  # noqa: PLC0415

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    client.create_bucket("pipelines")
    yield client
    server.stop()
