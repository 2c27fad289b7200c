"""Pipelines: every pipeline compiles (and the Vertex TPU variant runs training as a custom job), bad input is
refused before submission, compiled pipelines are staged to GCS (a real emulator on loopback), Vertex submit
and schedule requests are checked with the API transport replaced (the only mock), and a whole fine-tuning
pipeline runs locally with kfp.local."""

from __future__ import annotations

import json
import os
import socket
import sys

import numpy as np
import pytest
import yaml

from pipelines.config import PipelineConfig
from pipelines.definitions import compile_pipeline
from pipelines.submit import RetrainingSchedule, SubmitConfig, cron_errors, stage_template
from trainer.config import ConfigError

FULL = {
    "pipeline": "full", "corpus": "corpus.txt",
    "vocabulary": {"kind": "wordpiece", "vocab_size": 2000},
    "pretraining_data": {"max_seq_length": 64, "max_predictions_per_seq": 10},
    "pretraining": {"steps": 10, "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}},
    "finetuning_tasks": [
        {"train": "a.tsv", "eval": "b.tsv", "data": {"task": "book", "max_seq_length": 64}},
        {"train": "a.conll", "eval": "b.conll", "data": {"task": "case", "level": "token", "input_format": "conll", "max_seq_length": 64}},
    ],
    "finetuning": {"steps": 10, "tasks": [{"name": "book", "kind": "sentence"}, {"name": "case", "kind": "token"}]},
    "thresholds": {"book.accuracy": 0.5}, "registry_dir": "registry",
}


def _compiled(tmp_path, data, target="vertex"):
    path = tmp_path / f"{data['pipeline']}.yaml"
    compile_pipeline(PipelineConfig.from_dict(data), str(path), target=target)
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("variant", ["pretraining", "finetuning", "full"])
def test_every_pipeline_compiles(variant, tmp_path):
    data = dict(FULL, pipeline=variant)
    if variant == "pretraining":
        data["thresholds"] = None
    if variant == "finetuning":
        data["checkpoint"] = "gs://bucket/uncased_L-12_H-768_A-12"
    spec = _compiled(tmp_path, data)
    tasks = spec["root"]["dag"]["tasks"]
    names = {t["taskInfo"]["name"] for t in tasks.values()}
    if variant != "pretraining":
        assert "gate passed" in names and "evaluate + gate" in names and "fine-tune" in names
        condition = tasks["condition-1"]["triggerPolicy"]["condition"]
        assert "gate-Output" in condition
        assert tasks["train" if variant == "finetuning" else "train-2"]["cachingOptions"].get("enableCache") is not True
    if variant != "finetuning":
        assert {"train vocabulary", "preprocess corpus (Beam)", "pretrain"} <= names
    if variant == "finetuning":
        assert "convert checkpoint" in names
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"corpus_uri", "thresholds", "finetuning_yaml", "project"}


def test_tpu_training_runs_as_a_vertex_custom_job(tmp_path):
    spec = _compiled(tmp_path, dict(FULL, pipeline="finetuning", pretrained_model="gs://b/model",
                                    resources={"machine_type": "ct5lp-hightpu-4t", "replica_count": 1}))
    executor = spec["deploymentSpec"]["executors"]["exec-train"]
    text = json.dumps(executor)
    assert "google_cloud_pipeline_components.container.v1.custom_job.launcher" in text and "CustomJob" in text
    assert "ct5lp-hightpu-4t" in json.dumps(spec["components"]["comp-train"])
    assert '\\"tpu\\": \\"local\\"' in json.dumps(spec["root"]["inputDefinitions"]["parameters"]["finetuning_yaml"])


def test_bad_pipeline_input_is_refused_before_submission(tmp_path):
    with pytest.raises(ConfigError, match="pipeline.*must be one of"):
        PipelineConfig.from_dict(dict(FULL, pipeline="nope"))
    with pytest.raises(ConfigError, match="corpus: required"):
        PipelineConfig.from_dict(dict(FULL, corpus="")).validate()
    with pytest.raises(ConfigError, match=r"thresholds: 'sentiment.accuracy' names task 'sentiment'"):
        PipelineConfig.from_dict(dict(FULL, thresholds={"sentiment.accuracy": 0.9})).validate()
    with pytest.raises(ConfigError, match=r"finetuning.*unknown field 'learning_rat'"):
        compile_pipeline(PipelineConfig.from_dict(dict(FULL, finetuning={**FULL["finetuning"], "learning_rat": 1})),
                         str(tmp_path / "x.yaml"))
    with pytest.raises(ConfigError, match="pipeline_root: must be a gs:// folder"):
        SubmitConfig(project="p", region="us-central1", pipeline_root="/tmp/root").validate()
    with pytest.raises(ConfigError, match="project: required"):
        SubmitConfig(region="r", pipeline_root="gs://b/r").validate()
    assert cron_errors("0 3 * * 1") == [] and cron_errors("TZ=Europe/Berlin */15 0-6 1,15 * *") == []
    with pytest.raises(ConfigError, match=r"'61' is outside 0-59 in the minute field"):
        RetrainingSchedule(cron="61 3 * * *").validate()
    with pytest.raises(ConfigError, match="must have 5 fields"):
        RetrainingSchedule(cron="every monday").validate()


PROJECT_NUMBER = "123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gcs_emulator(monkeypatch):
    """A real GCS server (gcp-storage-emulator) on loopback; google-cloud-storage talks to it."""
    from gcp_storage_emulator.server import create_server  # noqa: PLC0415

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, project_number=PROJECT_NUMBER)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    from google.cloud import storage  # noqa: PLC0415

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    client.create_bucket("pipelines")
    yield client
    server.stop()


def test_compiled_pipeline_is_staged_to_gcs(gcs_emulator, tmp_path):
    local = tmp_path / "p.yaml"
    local.write_text("pipelineInfo: {name: x}\n")
    uri = stage_template(str(local), "gs://pipelines/root", "bertkeras-full", client=gcs_emulator)
    assert uri.startswith("gs://pipelines/root/templates/bertkeras-full-") and uri.endswith(".yaml")
    blob = gcs_emulator.bucket("pipelines").blob(uri[len("gs://pipelines/"):])
    assert blob.download_as_text() == local.read_text()


class _Recorder:
    """Replaces the gRPC stubs of the Vertex AI GAPIC transports: records each request, answers with a proto."""

    def __init__(self, monkeypatch):
        from google.cloud.aiplatform_v1.services.pipeline_service.transports.grpc import PipelineServiceGrpcTransport  # noqa: PLC0415
        from google.cloud.aiplatform_v1.services.schedule_service.transports.grpc import ScheduleServiceGrpcTransport  # noqa: PLC0415
        from google.cloud.aiplatform_v1.types import PipelineJob, PipelineState, Schedule  # noqa: PLC0415

        self.requests: list[tuple[str, object]] = []
        parent = "projects/test-project/locations/us-central1"

        def stub(name, respond):
            def call(request, timeout=None, metadata=(), **kwargs):
                self.requests.append((name, request))
                return respond(request)
            return property(lambda _self: call)

        def job(request):
            return PipelineJob(name=f"{parent}/pipelineJobs/run-1", display_name=request.pipeline_job.display_name,
                               state=PipelineState.PIPELINE_STATE_PENDING)

        def schedule(request):
            return Schedule(name=f"{parent}/schedules/42", display_name=request.schedule.display_name,
                            cron=request.schedule.cron, state=Schedule.State.ACTIVE)

        stored = lambda request: Schedule(name=request.name, display_name="bertkeras-retraining", cron="0 3 * * 1",  # noqa: E731
                                          state=Schedule.State.ACTIVE)
        from google.cloud.resourcemanager_v3.services.projects.transports.grpc import ProjectsGrpcTransport  # noqa: PLC0415
        from google.cloud.resourcemanager_v3.types import Project  # noqa: PLC0415

        # aiplatform checks that the pipeline-root bucket belongs to the project (Resource Manager API).
        monkeypatch.setattr(ProjectsGrpcTransport, "get_project", stub(
            "get_project", lambda r: Project(name=f"projects/{PROJECT_NUMBER}", project_id="test-project")))
        monkeypatch.setattr(PipelineServiceGrpcTransport, "create_pipeline_job", stub("create_pipeline_job", job))
        monkeypatch.setattr(ScheduleServiceGrpcTransport, "create_schedule", stub("create_schedule", schedule))
        monkeypatch.setattr(ScheduleServiceGrpcTransport, "get_schedule", stub("get_schedule", stored))
        monkeypatch.setattr(ScheduleServiceGrpcTransport, "pause_schedule", stub("pause_schedule", lambda r: None))
        from google.cloud.aiplatform_v1.types import ListSchedulesResponse  # noqa: PLC0415

        monkeypatch.setattr(ScheduleServiceGrpcTransport, "list_schedules", stub(
            "list_schedules", lambda r: ListSchedulesResponse(schedules=[stored(type("R", (), {"name": f"{parent}/schedules/42"}))])))


@pytest.fixture
def vertex(monkeypatch, gcs_emulator):
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    from google.cloud import aiplatform  # noqa: PLC0415

    aiplatform.init(project="test-project", location="us-central1", credentials=AnonymousCredentials())
    return _Recorder(monkeypatch)


SUBMIT = SubmitConfig(project="test-project", region="us-central1", pipeline_root="gs://pipelines/root",
                      service_account="pipelines@test-project.iam.gserviceaccount.com", labels=("team=nlp",),
                      enable_caching=False)


def test_vertex_submit_sends_the_template_parameters_and_service_account(vertex, gcs_emulator):
    from pipelines.submit import submit  # noqa: PLC0415

    config = PipelineConfig.from_dict(dict(FULL, pipeline="finetuning", pretrained_model="gs://pipelines/model"))
    result = submit(config, SUBMIT, {"task_a_train": "gs://pipelines/data/train.tsv"}, storage_client=gcs_emulator)
    assert result["resource_name"].endswith("pipelineJobs/run-1")
    name, request = vertex.requests[-1]
    assert name == "create_pipeline_job" and request.parent == "projects/test-project/locations/us-central1"
    job = request.pipeline_job
    assert job.service_account == SUBMIT.service_account and dict(job.labels)["team"] == "nlp"
    assert job.runtime_config.gcs_output_directory == "gs://pipelines/root"
    params = dict(job.runtime_config.parameter_values)
    assert params["task_a_train"] == "gs://pipelines/data/train.tsv" and params["project"] == "test-project"
    assert job.pipeline_spec["pipelineInfo"]["name"] == "bertkeras-finetuning"
    assert any(b.name.startswith("root/templates/bertkeras-finetuning-") for b in gcs_emulator.list_blobs("pipelines"))


def test_vertex_schedule_create_list_pause(vertex, gcs_emulator):
    from pipelines.submit import create_schedule, manage_schedules  # noqa: PLC0415

    config = PipelineConfig.from_dict(dict(FULL, pipeline="finetuning", pretrained_model="gs://pipelines/model"))
    schedule = RetrainingSchedule(cron="0 3 * * 1", max_concurrent_runs=2, end_time="2027-06-01T00:00:00Z")
    result = create_schedule(config, SUBMIT, schedule, storage_client=gcs_emulator)
    assert result["resource_name"].endswith("schedules/42")
    name, request = [r for r in vertex.requests if r[0] == "create_schedule"][-1]
    sent = request.schedule
    assert sent.cron == "0 3 * * 1" and sent.max_concurrent_run_count == 2
    assert sent.end_time.year == 2027
    assert sent.create_pipeline_job_request.pipeline_job.service_account == SUBMIT.service_account
    listed = manage_schedules(SUBMIT, "list")
    assert listed[0]["cron"] == "0 3 * * 1" and listed[0]["state"] == "ACTIVE"
    manage_schedules(SUBMIT, "pause", "projects/test-project/locations/us-central1/schedules/42")
    assert vertex.requests[-1][0] == "pause_schedule"
    assert vertex.requests[-1][1].name.endswith("schedules/42")


def test_finetuning_pipeline_runs_locally_with_kfp_local(minilm_dir, tmp_path):
    """A real run: import a (tiny) pretrained model, prepare records with Beam, fine-tune, evaluate, gate, register."""
    from components.corpora import kjv_chapters  # noqa: PLC0415
    from pipelines.local import run_local  # noqa: PLC0415
    from trainer.model.builder import build_model  # noqa: PLC0415
    from trainer.model.config import TransformerConfig  # noqa: PLC0415
    from trainer.text.factory import EncoderConfig, build_encoder  # noqa: PLC0415

    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    tiny = TransformerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=64)
    build_model(tiny).save(str(pretrained / "model.keras"))
    build_encoder(EncoderConfig(vocab_file=os.path.join(minilm_dir, "vocab.txt"))).save(str(pretrained / "encoder"))
    verses = [v for _, vs in kjv_chapters()[:300] for v in vs if len(v.split()) < 25]
    rows = [(v, "question") for v in verses if v.endswith("?")][:120] + [(v, "statement") for v in verses if "?" not in v][:120]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    for name, part in (("train", rows[:180]), ("eval", rows[180:])):
        (tmp_path / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in part))
    config = PipelineConfig.from_dict({
        "pipeline": "finetuning", "component_image": "python:3.11", "pretrained_model": str(pretrained),
        "finetuning_tasks": [{"train": str(tmp_path / "train.tsv"), "eval": str(tmp_path / "eval.tsv"),
                              "data": {"task": "question", "max_seq_length": 32}}],
        "finetuning": {"steps": 40, "log_every": 20, "checkpoint_every": 40, "data": {"global_batch_size": 16},
                       "optimizer": {"learning_rate": 0.003}, "tasks": [{"name": "question", "kind": "sentence"}]},
        "thresholds": {"question.accuracy": 0.0}, "registry_dir": str(tmp_path / "registry"),
    })
    result = run_local(config, str(tmp_path / "root"))
    artifacts = result["artifacts"]
    assert {"train/model", "evaluate/report", "evaluate/report_markdown", "local-register/executor_output.json"} <= set(artifacts)
    gate = json.load(open(artifacts["evaluate/executor_output.json"]))["parameterValues"]
    assert gate["passed"] is True and json.loads(gate["summary"])["metrics"]["question.accuracy"] > 0
    report = open(artifacts["evaluate/report"]).read()
    assert "Evaluation report" in report and "data:image/png;base64," in report
    registered = tmp_path / "registry" / "bertkeras-model" / "v1"
    assert (registered / "model.keras").exists() and (registered / "serving" / "saved_model.pb").exists()


class _FakeKfpServer:
    """A KFP API v2beta1 server on loopback answering what kfp.Client asks; records each request."""

    def __init__(self):
        import http.server  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.requests: list[tuple[str, str, dict]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body: dict):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                path = self.path.split("?")[0]
                recorder.requests.append((method, self.path, body))
                if path.endswith("/healthz"):
                    return self._reply({"multi_user": False})
                if path.endswith("/experiments") and method == "GET":
                    return self._reply({})
                if path.endswith("/experiments"):
                    return self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
                if path.endswith("/runs"):
                    return self._reply({"run_id": "run-1", "display_name": body.get("display_name")})
                if path.endswith("/recurringruns") and method == "POST":
                    return self._reply({"recurring_run_id": "rr-1", "display_name": body.get("display_name")})
                if path.endswith("/recurringruns"):
                    return self._reply({"recurringRuns": [{"recurring_run_id": "rr-1", "display_name": "bertkeras-retraining",
                                                            "status": "ENABLED"}]})
                return self._reply({})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_kubeflow_submit_and_recurring_runs_against_a_kfp_api_server():
    from pipelines.submit import create_schedule, manage_schedules, submit  # noqa: PLC0415

    server = _FakeKfpServer()
    target = SubmitConfig(target="kubeflow", host=server.url, experiment="nlp", enable_caching=False)
    config = PipelineConfig.from_dict(dict(FULL, pipeline="finetuning", pretrained_model="gs://pipelines/model"))
    try:
        assert submit(config, target, {"task_a_train": "gs://b/train.tsv"}) == {"target": "kubeflow", "run_id": "run-1"}
        run = [b for m, p, b in server.requests if m == "POST" and p.startswith("/apis/v2beta1/runs")][-1]
        assert run["pipeline_spec"]["pipelineInfo"]["name"] == "bertkeras-finetuning"
        assert run["runtime_config"]["parameters"]["task_a_train"] == "gs://b/train.tsv"
        assert run["experiment_id"] == "exp-1"
        created = create_schedule(config, target, RetrainingSchedule(cron="0 3 * * 1", max_concurrent_runs=2))
        assert created["recurring_run_id"] == "rr-1"
        recurring = [b for m, p, b in server.requests if m == "POST" and p.startswith("/apis/v2beta1/recurringruns")][-1]
        assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1" and int(recurring["max_concurrency"]) == 2
        assert manage_schedules(target, "list")[0]["name"] == "rr-1"
        manage_schedules(target, "pause", "rr-1")
        assert server.requests[-1][:2] == ("POST", "/apis/v2beta1/recurringruns/rr-1:disable")
        manage_schedules(target, "delete", "rr-1")
        assert server.requests[-1][:2] == ("DELETE", "/apis/v2beta1/recurringruns/rr-1")
    finally:
        server.server.shutdown()


def test_register_uploads_the_serving_model_to_the_vertex_model_registry(vertex, monkeypatch):
    from google.cloud.aiplatform_v1.services.model_service.transports.grpc import ModelServiceGrpcTransport  # noqa: PLC0415
    from google.cloud.aiplatform_v1.types import Model, UploadModelResponse  # noqa: PLC0415
    from google.longrunning import operations_pb2  # noqa: PLC0415
    from google.protobuf import any_pb2  # noqa: PLC0415

    from components.pipeline_steps import register  # noqa: PLC0415

    sent = []
    name = "projects/test-project/locations/us-central1/models/7"

    def upload(request, timeout=None, metadata=(), **kwargs):
        sent.append(request)
        response = any_pb2.Any()
        response.Pack(UploadModelResponse.pb(UploadModelResponse(model=name, model_version_id="1")))
        return operations_pb2.Operation(name=f"{name}/operations/1", done=True, response=response)

    def get_model(request, timeout=None, metadata=(), **kwargs):
        return Model(name=name, display_name="kjv", version_id="1")

    monkeypatch.setattr(ModelServiceGrpcTransport, "upload_model", property(lambda _self: upload))
    monkeypatch.setattr(ModelServiceGrpcTransport, "get_model", property(lambda _self: get_model))
    image = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"
    assert register("gs://models/run-1", "test-project", "us-central1", "kjv", image) == name
    model = sent[-1].model
    assert model.artifact_uri == "gs://models/run-1/export/serving" and model.display_name == "kjv"
    assert model.container_spec.image_uri == image
    with pytest.raises(ValueError, match="must be on GCS"):
        register("/tmp/run-1", "test-project", "us-central1", "kjv", image)
