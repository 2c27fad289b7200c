"""Deployment: every job runs as its own account (the train custom job and the Dataflow workers as the compiled
pipeline says, the pipeline as its submission says, Cloud Build as its first step checks), the Cloud Build steps
run as written (the compile command with its default substitutions, the TPU image only when asked, with
`docker` and the metadata server replaced by recorders: there is no daemon or cloud here), images install only
hash-locked packages and carry version tags, and a model registered on Vertex AI is a copy outside the
expiring pipeline root (a real GCS emulator; only the Vertex API is replaced)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml

from pipelines.config import RELEASE, PipelineConfig
from pipelines.definitions import compile_pipeline
from pipelines.submit import SubmitConfig
from conftest import VERTEX_MODEL
from trainer.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = "bertkeras-training@test-project.iam.gserviceaccount.com"
DATAFLOW = "bertkeras-dataflow@test-project.iam.gserviceaccount.com"
GPU = {"machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 1}
FULL = {
    "pipeline": "full", "corpus": "gs://data/corpus.txt",
    "pretraining": {"steps": 10, "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}},
    "finetuning_tasks": [{"train": "gs://data/a.tsv", "eval": "gs://data/b.tsv", "data": {"task": "book"}}],
    "finetuning": {"steps": 10, "tasks": [{"name": "book", "kind": "sentence"}]},
    "register_target": "vertex", "model_store": "gs://models/registered",
}


def _spec(tmp_path, target="vertex", **changes) -> dict:
    path = tmp_path / "pipeline.yaml"
    compile_pipeline(PipelineConfig.from_dict({**FULL, **changes}), str(path), target=target)
    return yaml.safe_load(path.read_text())


def _tasks(spec: dict) -> dict:
    """Every task of the compiled pipeline, nested DAGs (loops, conditions) included: name -> task."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


# --- identities ------------------------------------------------------------------------------------------------
def test_training_custom_jobs_run_as_the_training_account(tmp_path):
    spec = _spec(tmp_path, resources=GPU, service_accounts={"training": TRAINING})
    for component in ("comp-pretrain", "comp-train"):  # both train steps are custom jobs
        parameters = spec["components"][component]["inputDefinitions"]["parameters"]
        assert parameters["service_account"]["defaultValue"] == TRAINING
        executor = json.dumps(spec["deploymentSpec"]["executors"][spec["components"][component]["executorLabel"]])
        assert "custom_job.launcher" in executor and "\\\"service_account\\\": \\\"{{$.inputs.parameters['service_account']}}\\\"" in executor
    with pytest.raises(ConfigError, match=r"service_accounts.training: required for the train step's Vertex AI custom job"):
        _spec(tmp_path, resources=GPU)
    with pytest.raises(ConfigError, match=r"resources.machine_type: required with service_accounts.training"):
        _spec(tmp_path, service_accounts={"training": TRAINING})
    with pytest.raises(ConfigError, match=r"service_accounts.training: 'training' is not a service account email"):
        PipelineConfig.from_dict({**FULL, "service_accounts": {"training": "training"}}).validate()
    # Elsewhere the resources are unused and no account is asked for.
    assert "service_account" not in json.dumps(_spec(tmp_path, target="kubeflow", resources=GPU)["components"]["comp-train"])


def test_dataflow_steps_run_as_the_dataflow_account(tmp_path):
    spec = _spec(tmp_path, beam_runner="DataflowRunner", beam_args=["--project=test-project", "--region=us-central1"],
                 service_accounts={"dataflow": DATAFLOW})
    beam = {name: task["inputs"]["parameters"]["beam_args"]["runtimeValue"]["constant"]
            for name, task in _tasks(spec).items() if "beam_args" in task.get("inputs", {}).get("parameters", {})}
    assert set(beam) == {"preprocess-corpus", "prepare-finetuning-data", "prepare-finetuning-data-2"}
    assert all(args == ["--project=test-project", "--region=us-central1", f"--service_account_email={DATAFLOW}"]
               for args in beam.values())
    local = _tasks(_spec(tmp_path, service_accounts={"dataflow": DATAFLOW}))  # DirectRunner: no Dataflow flags
    assert local["preprocess-corpus"]["inputs"]["parameters"]["beam_args"]["runtimeValue"]["constant"] == []
    with pytest.raises(ConfigError, match=r"service_accounts.dataflow: required with beam_runner=DataflowRunner"):
        PipelineConfig.from_dict({**FULL, "beam_runner": "DataflowRunner"}).validate()
    with pytest.raises(ConfigError, match=r"beam_args: '--service_account_email=x@p.iam.gserviceaccount.com': set service_accounts.dataflow"):
        PipelineConfig.from_dict({**FULL, "beam_runner": "DataflowRunner", "service_accounts": {"dataflow": DATAFLOW},
                                  "beam_args": ["--service_account_email=x@p.iam.gserviceaccount.com"]}).validate()


def test_vertex_runs_need_the_pipelines_account():
    with pytest.raises(ConfigError, match=r"service_account: required to submit to Vertex AI"):
        SubmitConfig(project="p", region="us-central1", pipeline_root="gs://b/root").validate()
    SubmitConfig(project="p", region="us-central1", pipeline_root="gs://b/root",
                 service_account="bertkeras-pipelines@p.iam.gserviceaccount.com").validate()


def test_deploy_doc_has_every_account_terraform_creates():
    main = open(os.path.join(REPO, "infra", "terraform", "main.tf")).read()
    block = re.search(r"\n  accounts = \{\n(.*?)\n  \}", main, re.S).group(1)
    accounts = re.findall(r"^\s+(\w+)\s+=", block, re.M)
    assert accounts == ["pipelines", "dataflow", "training", "build"]
    rows = [line for line in open(os.path.join(REPO, "docs", "deploy.md")).read().splitlines() if line.startswith("| `bertkeras-")]
    assert [re.match(r"\| `bertkeras-(\w+)`", row).group(1) for row in rows] == accounts
    for account in accounts:  # every bucket grant of an account is in its row
        row = next(r for r in rows if r.startswith(f"| `bertkeras-{account}`"))
        for bucket, role in re.findall(rf'bucket = "(\w+)", account = "{account}", role = "roles/storage\.(\w+)"', main):
            assert f"{role} on {bucket}" in row, (account, bucket, role)


# --- Cloud Build -------------------------------------------------------------------------------------------------
def _cloudbuild() -> dict:
    return yaml.safe_load(open(os.path.join(REPO, "infra", "cloudbuild.yaml")))


def _step_script(step_id: str, workspace, **substitutions) -> str:
    """A step's bash script as Cloud Build runs it: ``$$`` is a literal ``$``, ``${NAME}`` / ``$NAME`` the
    substitution (an undeclared one is an error, as in Cloud Build), /workspace the build's folder."""
    build = _cloudbuild()
    values = {**{k: str(v) for k, v in build["substitutions"].items()}, "PROJECT_ID": "test-project", **substitutions}
    step = next(s for s in build["steps"] if s["id"] == step_id)
    assert step["entrypoint"] == "bash" and step["args"][0] == "-c"

    def substitute(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        assert name in values, f"{step_id}: ${name} is neither a built-in nor a declared substitution"
        return values[name]

    script = re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", substitute, step["args"][1])
    return script.replace("/workspace", str(workspace))


def _recorder(bin_dir, name: str, body: str = "") -> str:
    """An executable ``name`` on PATH that appends its arguments to <bin_dir>/<name>.log (then runs ``body``)."""
    log = bin_dir / f"{name}.log"
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "$*" >> {shlex.quote(str(log))}\n{body}\n')
    path.chmod(0o755)
    return str(log)


def _run_step(step_id: str, tmp_path, env: dict | None = None, **substitutions) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])
    return subprocess.run(["bash", "-c", _step_script(step_id, tmp_path, **substitutions)], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, "PATH": path, **(env or {})}, timeout=300)


def test_cloud_build_default_compiles_its_pipeline(tmp_path):
    """The compile step, exactly as written, with the default substitutions: the config it names exists and
    compiles into a pipeline whose images carry the build's tag and whose train job runs as the training account."""
    build = _cloudbuild()
    defaults = build["substitutions"]
    assert os.path.isfile(os.path.join(REPO, defaults["_PIPELINE_CONFIG"]))
    result = _run_step("compile-pipeline", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    images = "us-central1-docker.pkg.dev/test-project/bertkeras"
    assert spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["image"] == f"{images}/component:{RELEASE}"
    assert f"{images}/trainer-gpu:{RELEASE}" in json.dumps(spec["components"]["comp-train"]["inputDefinitions"])
    assert spec["components"]["comp-train"]["inputDefinitions"]["parameters"]["service_account"]["defaultValue"] == TRAINING
    register = _tasks(spec)["register"]["inputs"]["parameters"]["model_store"]["runtimeValue"]["constant"]
    assert register == "gs://test-project-bertkeras-models/registered"
    assert "PROJECT_ID" not in (tmp_path / "pipeline-config.yaml").read_text()
    # The template goes up only after every image it names is pushed.
    upload = next(s for s in build["steps"] if s["id"] == "upload-pipeline")
    assert set(upload["waitFor"]) == {s["id"] for s in build["steps"]} - {"check-build", "upload-pipeline"}


def test_trainer_tpu_image_is_built_only_when_asked(tmp_path):
    (tmp_path / "bin").mkdir()
    docker = _recorder(tmp_path / "bin", "docker")
    result = _run_step("trainer-tpu", tmp_path)
    assert result.returncode == 0 and "not built" in result.stdout and not os.path.exists(docker)
    result = _run_step("trainer-tpu", tmp_path, _TRAINER_VARIANT="tpu", _TAG="abc1234")
    assert result.returncode == 0, result.stderr
    image = "us-central1-docker.pkg.dev/test-project/bertkeras/trainer-tpu:abc1234"
    assert open(docker).read().splitlines() == [
        f"build -f infra/docker/trainer.Dockerfile --build-arg TF_VARIANT=tpu -t {image} .", f"push {image}"]


def test_cloud_build_refuses_to_run_as_another_account(tmp_path):
    (tmp_path / "bin").mkdir()
    _recorder(tmp_path / "bin", "curl", 'echo -n "$FAKE_IDENTITY"')
    default = _run_step("check-build", tmp_path, env={"FAKE_IDENTITY": "123-compute@developer.gserviceaccount.com"})
    assert default.returncode == 1
    assert "runs as '123-compute@developer.gserviceaccount.com', not bertkeras-build@test-project" in default.stderr
    assert "--service-account=projects/test-project/serviceAccounts/bertkeras-build@" in default.stderr
    own = _run_step("check-build", tmp_path, env={"FAKE_IDENTITY": "bertkeras-build@test-project.iam.gserviceaccount.com"})
    assert own.returncode == 0, own.stderr
    wrong = _run_step("check-build", tmp_path, env={"FAKE_IDENTITY": "bertkeras-build@test-project.iam.gserviceaccount.com"},
                      _TRAINER_VARIANT="tpu4")
    assert wrong.returncode == 1 and "_TRAINER_VARIANT must be cpu, gpu or tpu, got 'tpu4'" in wrong.stderr


# --- images ----------------------------------------------------------------------------------------------------------
def _pins(path: str) -> dict[str, tuple[str, set[str]]]:
    """A hash-locked requirements file: name -> (version, hashes); an entry without a hash is an error."""
    text = open(os.path.join(REPO, path)).read()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)((?:[ \t]*\\\n[ \t]*--hash=\S+)*)", text, re.M)
    names = re.findall(r"^[A-Za-z0-9]", text, re.M)
    assert len(entries) == len(names), f"{path}: an entry is not NAME==VERSION"
    pins = {}
    for name, version, hashes in entries:
        assert "--hash=sha256:" in hashes, f"{path}: {name} has no hash"
        pins[name.lower()] = (version, set(re.findall(r"--hash=(\S+)", hashes)))
    return pins


def _pip_installs(dockerfile: str) -> list[str]:
    text = open(os.path.join(REPO, "infra", "docker", dockerfile)).read().replace("\\\n", " ")
    return [" ".join(command.split()) for line in text.splitlines() if line.startswith("RUN")
            for command in re.findall(r"pip install[^&;]*", line)]


@pytest.mark.parametrize("dockerfile", ["component.Dockerfile", "trainer.Dockerfile", "beam-worker.Dockerfile"])
def test_images_install_only_hash_locked_packages(dockerfile):
    installs = _pip_installs(dockerfile)
    assert installs
    for command in installs:
        locked = re.fullmatch(r'pip install (--no-deps )?--require-hashes -r "?([\w./${}-]+)"?', command)
        project = command == "pip install --no-deps --no-build-isolation --no-index ."
        assert locked or project, f"{dockerfile}: {command!r} installs what no hash-locked file pins"
        if locked and "${" not in locked.group(2):
            _pins(locked.group(2) if os.path.exists(os.path.join(REPO, locked.group(2))) else "infra/" + locked.group(2))


def test_accelerator_locks_agree_with_the_main_lock():
    main = _pins("requirements.lock")
    for variant, extra in (("gpu", "nvidia-cudnn-cu12"), ("tpu", "libtpu")):
        lock = _pins(f"infra/requirements-{variant}.lock")
        assert extra in lock and extra not in main
        for name, (version, hashes) in lock.items():
            if name in main:
                assert version == main[name][0] and hashes <= main[name][1], f"{variant}: {name} differs from requirements.lock"
        copies = [line for line in open(os.path.join(REPO, "infra", "docker", "trainer.Dockerfile")) if line.startswith("COPY")]
        assert any(f" infra/requirements-{variant}.lock " in line for line in copies)


def test_the_project_builds_offline_with_the_locked_setuptools(tmp_path):
    """The images' last install, run here: no build isolation, no index, so nothing but the locked setuptools."""
    import shutil  # noqa: PLC0415

    import setuptools  # noqa: PLC0415

    assert setuptools.__version__ == _pins("requirements.lock")["setuptools"][0]
    source = tmp_path / "src"  # what the Dockerfiles copy, outside the checkout (pip builds in place)
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    for name in ("trainer", "components", "pipelines"):
        shutil.copytree(os.path.join(REPO, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    command = _pip_installs("component.Dockerfile")[-1].replace("pip install", "pip wheel") + f" -w {tmp_path / 'wheels'}"
    result = subprocess.run([sys.executable, "-m", *command.split()], cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.listdir(tmp_path / "wheels") == [f"bertkeras-{RELEASE}-py3-none-any.whl"]


def test_images_are_referenced_by_version_tags():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert RELEASE == version and str(_cloudbuild()["substitutions"]["_TAG"]) == version
    assert PipelineConfig().component_image == f"bertkeras-component:{version}"
    for folder, _, files in os.walk(os.path.join(REPO, "infra")):
        for name in files:
            text = open(os.path.join(folder, name), errors="replace").read()
            assert ":latest" not in text, f"{name}: names an image by a moving tag"
    froms = re.findall(r"^(?:FROM|ARG BASE_IMAGE=)\s*(\S+)", "\n".join(
        open(os.path.join(REPO, "infra", "docker", f)).read() for f in os.listdir(os.path.join(REPO, "infra", "docker"))), re.M)
    assert froms and all(re.search(r":\d[\w.-]*$", image) for image in froms if not image.startswith("$")), froms


# --- registered models ---------------------------------------------------------------------------------------------
def _fake_export(client, bucket: str, run: str, complete: bool = True) -> None:
    names = ["model.keras", "serving/saved_model.pb", "serving/variables/variables.index", "book_labels.txt"]
    for name in names + (["_COMPLETE"] if complete else []):
        client.bucket(bucket).blob(f"{run}/export/{name}").upload_from_string(f"bytes of {name}")


def test_registered_model_is_a_copy_outside_the_pipeline_root(gcs_emulator, vertex_model_service):
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    from google.cloud import aiplatform  # noqa: PLC0415

    from components import pipeline_steps  # noqa: PLC0415
    from trainer.model.saving import IncompleteModelError  # noqa: PLC0415

    gcs_emulator.create_bucket("models")
    run = "root/123/run-1/train_42/model"
    _fake_export(gcs_emulator, "pipelines", run)
    sent, name = vertex_model_service, VERTEX_MODEL
    aiplatform.init(project="test-project", location="us-central1", credentials=AnonymousCredentials())
    image = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"
    assert pipeline_steps.register_published(f"gs://pipelines/{run}", "gs://models/registered", "test-project",
                                             "us-central1", "kjv", image) == name
    uri = sent[-1].model.artifact_uri
    assert re.fullmatch(r"gs://models/registered/kjv/\d{8}-\d{6}-\d{6}/serving", uri)
    copied = {b.name for b in gcs_emulator.list_blobs("models")}
    folder = uri[len("gs://models/"):-len("/serving")]
    assert copied == {f"{folder}/{n}" for n in ("model.keras", "serving/saved_model.pb", "serving/variables/variables.index",
                                                 "book_labels.txt", "_COMPLETE")}
    assert gcs_emulator.bucket("models").blob(f"{folder}/serving/saved_model.pb").download_as_text() == "bytes of serving/saved_model.pb"
    # An unfinished export, a name that is not one folder, no store: refused, nothing copied or registered.
    _fake_export(gcs_emulator, "pipelines", "root/123/run-2/train_43/model", complete=False)
    with pytest.raises(IncompleteModelError, match="no _COMPLETE marker"):
        pipeline_steps.publish_export("gs://pipelines/root/123/run-2/train_43/model", "gs://models/registered", "kjv")
    with pytest.raises(ValueError, match="model_display_name '../x'"):
        pipeline_steps.publish_export(f"gs://pipelines/{run}", "gs://models/registered", "../x")
    with pytest.raises(ValueError, match="model_store: required"):
        pipeline_steps.register_published(f"gs://pipelines/{run}", "", "test-project", "us-central1", "kjv", image)
    assert len(sent) == 1 and {b.name for b in gcs_emulator.list_blobs("models")} == copied
    with pytest.raises(ConfigError, match="model_store: required with register_target=vertex"):
        PipelineConfig.from_dict({**FULL, "model_store": ""}).validate()
