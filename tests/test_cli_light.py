"""`--help` of every command builds the parser from the config modules alone: no TensorFlow, Keras, Beam, kfp,
Google Cloud client or NumPy is imported until a command runs (they made `bertkeras --help` take seconds).

Each case runs in a fresh interpreter, so modules an earlier test imported cannot hide an import. The check is
on the cause (what is in ``sys.modules``), not on a time."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Top-level packages the parsers must not load. ``google.cloud`` itself is a namespace package that a .pth file
# of google-cloud-aiplatform registers at interpreter start; its clients (``google.cloud.<x>``) are the heavy part.
HEAVY = ("tensorflow", "tensorflow_text", "keras", "apache_beam", "kfp", "google_cloud_pipeline_components", "numpy")

CHILD = """
import json, sys
sys.argv = {argv!r}
import {module} as entry
try:
    code = entry.main()
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} or m.startswith("google.cloud."))
print("\\n" + json.dumps({{"code": code, "heavy": heavy}}))
"""


def help_imports(module: str, argv: list[str]) -> dict:
    """Runs ``module.main()`` with ``argv`` (ending in --help) in a fresh interpreter in the repository root;
    -> {"code": exit code, "heavy": heavy modules loaded}."""
    result = subprocess.run([sys.executable, "-c", CHILD.format(argv=argv, module=module, heavy=HEAVY)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", [
    [], ["encoder"], ["encoder", "encode"], ["encoder", "save"], ["convert"],
    ["preprocess"], ["preprocess", "pretraining"], ["preprocess", "finetuning"], ["preprocess", "vocabulary"],
    ["train"], ["evaluate"], ["export"],
    ["pipeline"], ["pipeline", "compile"], ["pipeline", "run"], ["pipeline", "submit"], ["pipeline", "schedule"],
    ["config-docs"],
], ids=lambda command: " ".join(command) or "bertkeras")
def test_bertkeras_help_imports_no_heavy_library(command):
    outcome = help_imports("pipelines.cli", ["bertkeras", *command, "--help"])
    assert outcome == {"code": 0, "heavy": []}


@pytest.mark.parametrize(("module", "argv"), [
    ("trainer.training.cli", ["python -m trainer", "train", "--help"]),
    ("components.preprocessing.steps", ["python -m components.preprocessing", "pretraining", "--help"]),
])
def test_container_entry_points_help_imports_no_heavy_library(module, argv):
    assert help_imports(module, argv) == {"code": 0, "heavy": []}


def test_a_command_that_loads_tensorflow_prints_no_cuda_probe_noise_on_a_machine_without_a_gpu(tmp_path):
    """TensorFlow's native start-up writes CUDA probe failures to stderr before any log setting applies; the CLI
    drops them where no GPU is found, and keeps everything else (here: the command's own error)."""
    script = "import sys, tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    gpus = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    if gpus.stdout.strip() != "0" or "cuda drivers" not in gpus.stderr:
        pytest.skip("TensorFlow prints no CUDA probe failure here (a GPU, or a CPU-only build): nothing to hide")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "export", str(tmp_path / "missing")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"bertkeras: error: {tmp_path / 'missing'}: no training_config.yaml (not a training run or its export)"]
