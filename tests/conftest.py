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
def vocab(minilm_dir) -> str:
    """MiniLM's uncased WordPiece vocabulary."""
    return os.path.join(minilm_dir, "vocab.txt")


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


VERTEX_MODEL = "projects/test-project/locations/us-central1/models/7"


@pytest.fixture
def vertex_model_service(monkeypatch) -> list:
    """Vertex AI's model service replaced (the only thing replaced): uploads are recorded in the returned list
    and answered with :data:`VERTEX_MODEL`."""
    from google.cloud.aiplatform_v1.services.model_service.transports.grpc import ModelServiceGrpcTransport  # noqa: PLC0415
    from google.cloud.aiplatform_v1.types import Model, UploadModelResponse  # noqa: PLC0415
    from google.longrunning import operations_pb2  # noqa: PLC0415
    from google.protobuf import any_pb2  # noqa: PLC0415

    sent = []

    def upload(request, timeout=None, metadata=(), **kwargs):
        sent.append(request)
        response = any_pb2.Any()
        response.Pack(UploadModelResponse.pb(UploadModelResponse(model=VERTEX_MODEL, model_version_id="1")))
        return operations_pb2.Operation(name=f"{VERTEX_MODEL}/operations/1", done=True, response=response)

    def get_model(request, timeout=None, metadata=(), **kwargs):
        return Model(name=VERTEX_MODEL, display_name="kjv", version_id="1")

    monkeypatch.setattr(ModelServiceGrpcTransport, "upload_model", property(lambda _self: upload))
    monkeypatch.setattr(ModelServiceGrpcTransport, "get_model", property(lambda _self: get_model))
    return sent
