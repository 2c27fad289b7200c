"""Pipelines: every pipeline compiles (and the Vertex TPU variant runs training as a custom job), the pipeline
config is typed down to each step's own config and bad input is refused before submission, compiled pipelines
are staged to GCS (a real emulator on loopback), Vertex submit and schedule requests are checked with the API
transport replaced (the only mock), and whole fine-tuning pipelines (one task, three tasks) run locally with
kfp.local."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import yaml

from pipelines.config import PipelineConfig
from pipelines.definitions import compile_pipeline, task_items
from pipelines.submit import RetrainingSchedule, SubmitConfig, cron_errors, stage_template
from trainer.config import ConfigError
from conftest import GCS_PROJECT_NUMBER as PROJECT_NUMBER, VERTEX_MODEL  # the gcs_emulator fixture's (tests/conftest.py)

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
        assert {"each fine-tuning task", "fine-tune", "evaluate + gate", "gate passed"} <= names
        condition = tasks["condition-2"]["triggerPolicy"]["condition"]
        assert "gate-Output" in condition
        assert tasks["train"]["cachingOptions"].get("enableCache") is not True
        # One loop prepares every task's splits; the train and evaluate steps take the fan-in (dsl.Collected).
        loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
        assert {t["taskInfo"]["name"] for t in loop.values()} == {
            "import train data", "import eval data", "prepare train records (Beam)", "prepare eval records (Beam)"}
        assert tasks["train"]["inputs"]["artifacts"]["train_data"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
        assert spec["components"]["comp-train"]["inputDefinitions"]["artifacts"]["eval_data"]["isArtifactList"]
        items = spec["root"]["inputDefinitions"]["parameters"]["finetuning_tasks"]["defaultValue"]
        assert [(i["task"], i["train_uri"]) for i in items] == [("book", "a.tsv"), ("case", "a.conll")]
        assert json.loads(items[1]["data_yaml"])["level"] == "token"
    if variant != "finetuning":
        assert {"train vocabulary", "preprocess corpus (Beam)", "pretrain", "evaluate pretraining"} <= names
    if variant == "finetuning":
        assert "convert checkpoint" in names
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"corpus_uri", "thresholds", "finetuning_yaml", "project"}


def test_tpu_training_runs_as_a_vertex_custom_job(tmp_path):
    spec = _compiled(tmp_path, dict(FULL, pipeline="finetuning", pretrained_model="gs://b/model",
                                    resources={"machine_type": "ct5lp-hightpu-4t", "replica_count": 1},
                                    service_accounts={"training": "bertkeras-training@p.iam.gserviceaccount.com"}))
    executor = spec["deploymentSpec"]["executors"]["exec-train"]
    text = json.dumps(executor)
    assert "google_cloud_pipeline_components.container.v1.custom_job.launcher" in text and "CustomJob" in text
    assert "ct5lp-hightpu-4t" in json.dumps(spec["components"]["comp-train"])
    assert '\\"tpu\\": \\"local\\"' in json.dumps(spec["root"]["inputDefinitions"]["parameters"]["finetuning_yaml"])


def test_bad_pipeline_input_is_refused_before_submission():
    with pytest.raises(ConfigError, match="pipeline.*must be one of"):
        PipelineConfig.from_dict(dict(FULL, pipeline="nope"))
    with pytest.raises(ConfigError, match="corpus: required"):
        PipelineConfig.from_dict(dict(FULL, corpus="")).validate()
    with pytest.raises(ConfigError, match=r"thresholds: 'sentiment.accuracy' names task 'sentiment'"):
        PipelineConfig.from_dict(dict(FULL, thresholds={"sentiment.accuracy": 0.9})).validate()
    with pytest.raises(ConfigError, match=r"unknown field 'finetuning.learning_rat' for TrainConfig"):
        PipelineConfig.from_dict(dict(FULL, finetuning={**FULL["finetuning"], "learning_rat": 1}))
    with pytest.raises(ConfigError, match="pipeline_root: must be a gs:// folder"):
        SubmitConfig(project="p", region="us-central1", pipeline_root="/tmp/root").validate()
    with pytest.raises(ConfigError, match="project: required"):
        SubmitConfig(region="r", pipeline_root="gs://b/r").validate()
    assert cron_errors("0 3 * * 1") == [] and cron_errors("TZ=Europe/Berlin */15 0-6 1,15 * *") == []
    with pytest.raises(ConfigError, match=r"'61' is outside 0-59 in the minute field"):
        RetrainingSchedule(cron="61 3 * * *").validate()
    with pytest.raises(ConfigError, match="must have 5 fields"):
        RetrainingSchedule(cron="every monday").validate()


def _task(name: str, level: str = "sentence", length: int = 64, **extra) -> dict:
    data = {"task": name, "level": level, "max_seq_length": length}
    if level == "token":
        data["input_format"] = "conll"
    return {"train": f"{name}_train", "eval": f"{name}_eval", "data": data, **extra}


def _errors(**changes) -> str:
    """The message of validating FULL (as a fine-tuning pipeline) with ``changes``."""
    with pytest.raises(ConfigError) as caught:
        PipelineConfig.from_dict(dict(FULL, pipeline="finetuning", pretrained_model="gs://b/m", **changes)).validate()
    return str(caught.value)


def test_pipeline_config_is_typed_all_the_way_down():
    """Step sections are the steps' own configs (validated with placeholder paths), thresholds a typed list read
    from the YAML mapping, and any number of tasks, each with its own thresholds."""
    from components.preprocessing.finetuning import FinetuningDataConfig  # noqa: PLC0415
    from trainer.training.config import TrainConfig  # noqa: PLC0415

    tasks = [_task("book"), _task("case", "token", thresholds={"span_f1": 0.5}), _task("topic")]
    training = {"tasks": [{"name": t["data"]["task"], "kind": t["data"]["level"]} for t in tasks]}
    config = PipelineConfig.from_dict(dict(FULL, finetuning_tasks=tasks, finetuning=training)).validate()
    assert isinstance(config.finetuning, TrainConfig) and isinstance(config.finetuning_tasks[1].data, FinetuningDataConfig)
    assert config.gate_thresholds() == {"book.accuracy": 0.5, "case.span_f1": 0.5}
    assert config.thresholds[0].metric == "book.accuracy" and config.thresholds[0].minimum == 0.5
    assert PipelineConfig.from_dict(config.to_dict()) == config  # the typed list form reads back
    assert config.override("thresholds={topic.accuracy: 0.25}").gate_thresholds() == {"topic.accuracy": 0.25, "case.span_f1": 0.5}
    assert "vocabulary.vocab_size: must be >= 16, got 8" in _errors(vocabulary={"vocab_size": 8})
    assert "pretraining.optimizer.learning_rate: must be > 0" in _errors(pretraining={"optimizer": {"learning_rate": 0}})
    assert "finetuning_tasks[0].data.input_format: token-level tasks read conll, got tsv" in _errors(
        finetuning_tasks=[{**FULL["finetuning_tasks"][0], "data": {"task": "book", "level": "token"}}, FULL["finetuning_tasks"][1]])
    assert "finetuning.data.train_weights: 3 weights for 2 sources" in _errors(
        finetuning={**FULL["finetuning"], "data": {"train_weights": [1, 1, 1]}})
    assert "finetuning.output_dir: set by the pipeline (the model artifact)" in _errors(
        finetuning={**FULL["finetuning"], "output_dir": "/tmp/run"})
    assert "finetuning_tasks[1].data.inputs: set by the pipeline (the input artifact)" in _errors(
        finetuning_tasks=[FULL["finetuning_tasks"][0], {**FULL["finetuning_tasks"][1], "data": {
            **FULL["finetuning_tasks"][1]["data"], "inputs": ["x.conll"]}}])
    with pytest.raises(ConfigError, match=r"thresholds: 'book.accuracy' must be a number, got 'high'"):
        PipelineConfig.from_dict(dict(FULL, thresholds={"book.accuracy": "high"}))


def test_pipeline_config_checks_the_tasks_against_each_other():
    """What would fail only at training or evaluation time is an error before anything runs."""
    book, case = FULL["finetuning_tasks"]
    message = _errors(finetuning_tasks=[book, {**case, "data": {**case["data"], "max_seq_length": 128}}])
    assert "data.max_seq_length differs between tasks (book: 64, case: 128)" in message
    message = _errors(finetuning_tasks=[book, case, _task("book")])
    assert "finetuning_tasks[2].data.task: 'book' is also finetuning_tasks[0]" in message
    message = _errors(finetuning_tasks=[book, case, _task("topic")])
    assert "finetuning.tasks: no task named 'topic' although finetuning_tasks prepares its records" in message
    message = _errors(finetuning={**FULL["finetuning"], "tasks": [{"name": "book", "kind": "sentence"},
                                                                  {"name": "case", "kind": "sentence"}]})
    assert "finetuning.tasks: 'case' is kind 'sentence' but finetuning_tasks prepares token-level records" in message
    message = _errors(finetuning_tasks=[book])
    assert "finetuning.tasks[1]: 'case' (token) has no records; add it to finetuning_tasks (prepared: ['book'])" in message
    message = _errors(thresholds={"sentiment.accuracy": 0.9, "book": 0.1})
    assert "thresholds: 'sentiment.accuracy' names task 'sentiment', which the finetuning config does not have" in message
    assert "thresholds: 'book' must be 'task.metric'" in message
    message = _errors(finetuning_tasks=[{**book, "thresholds": {"book.accuracy": 0.1}}, {**case, "thresholds": {"accuracy": 0.2}}],
                      thresholds={"case.accuracy": 0.3})
    assert "finetuning_tasks[0].thresholds[0]: 'book.accuracy' must be a metric of this task only" in message
    assert "thresholds: ['case.accuracy'] given more than once" in message
    assert "finetuning_tasks: at least one task" in _errors(finetuning_tasks=[])
    # A masked-LM task may join the fine-tuning tasks (dynamic masking of their records).
    lm = {**FULL["finetuning"], "tasks": [*FULL["finetuning"]["tasks"], {"name": "masked_lm", "kind": "masked_lm"}]}
    assert PipelineConfig.from_dict(dict(FULL, finetuning=lm)).validate().finetuning.tasks[-1].kind == "masked_lm"


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
    tasks = [{**item, "train_uri": f"gs://pipelines/data/{item['task']}.tsv"} for item in task_items(config)]
    result = submit(config, SUBMIT, {"finetuning_tasks": tasks}, storage_client=gcs_emulator)
    assert result["resource_name"].endswith("pipelineJobs/run-1")
    name, request = vertex.requests[-1]
    assert name == "create_pipeline_job" and request.parent == "projects/test-project/locations/us-central1"
    job = request.pipeline_job
    assert job.service_account == SUBMIT.service_account and dict(job.labels)["team"] == "nlp"
    assert job.runtime_config.gcs_output_directory == "gs://pipelines/root"
    params = dict(job.runtime_config.parameter_values)
    assert [t["train_uri"] for t in params["finetuning_tasks"]] == ["gs://pipelines/data/book.tsv", "gs://pipelines/data/case.tsv"]
    assert params["project"] == "test-project"
    assert job.pipeline_spec["pipelineInfo"]["name"] == "bertkeras-finetuning"
    assert any(b.name.startswith("root/templates/bertkeras-finetuning-") for b in gcs_emulator.list_blobs("pipelines"))


def test_vertex_schedule_create_list_pause(vertex, gcs_emulator):
    from pipelines.submit import create_schedule, manage_schedules  # noqa: PLC0415

    config = PipelineConfig.from_dict(dict(FULL, pipeline="finetuning", pretrained_model="gs://pipelines/model",
                                           register_target="vertex", model_store="gs://models/registered"))
    assert config.champion_tolerance is None
    schedule = RetrainingSchedule(cron="0 3 * * 1", max_concurrent_runs=2, end_time="2027-06-01T00:00:00Z")
    result = create_schedule(config, SUBMIT, schedule, storage_client=gcs_emulator)
    assert result["resource_name"].endswith("schedules/42")
    name, request = [r for r in vertex.requests if r[0] == "create_schedule"][-1]
    sent = request.schedule
    assert sent.cron == "0 3 * * 1" and sent.max_concurrent_run_count == 2
    assert sent.end_time.year == 2027
    job = sent.create_pipeline_job_request.pipeline_job
    assert job.service_account == SUBMIT.service_account
    # A schedule retrains against the registered model by default: the pipeline looks it up in the Model
    # Registry and gates on not falling more than 0.02 below it.
    assert result["champion_tolerance"] == 0.02
    spec = json.dumps(type(job).to_dict(job)["pipeline_spec"])
    assert "find-champion" in spec and "book.accuracy_vs_champion" in spec
    with pytest.raises(ConfigError, match="champion_tolerance: must be >= 0"):
        RetrainingSchedule(cron="0 3 * * 1", champion_tolerance=-0.1).validate()
    # `schedule create --no_champion`: as the config says (here: no comparison)
    opted_out = RetrainingSchedule.resolve(None, ["cron=0 3 * * 1", "champion_tolerance=null"])
    assert create_schedule(config, SUBMIT, opted_out, storage_client=gcs_emulator)["champion_tolerance"] is None
    job = [r for r in vertex.requests if r[0] == "create_schedule"][-1][1].schedule.create_pipeline_job_request.pipeline_job
    assert "find-champion" not in json.dumps(type(job).to_dict(job)["pipeline_spec"])
    listed = manage_schedules(SUBMIT, "list")
    assert listed[0]["cron"] == "0 3 * * 1" and listed[0]["state"] == "ACTIVE"
    manage_schedules(SUBMIT, "pause", "projects/test-project/locations/us-central1/schedules/42")
    assert vertex.requests[-1][0] == "pause_schedule"
    assert vertex.requests[-1][1].name.endswith("schedules/42")


def test_vertex_champion_is_the_latest_model_of_that_name_in_the_model_registry(vertex, monkeypatch):
    from google.cloud.aiplatform_v1.services.model_service.transports.grpc import ModelServiceGrpcTransport  # noqa: PLC0415
    from google.cloud.aiplatform_v1.types import ListModelsResponse, Model  # noqa: PLC0415

    from components.pipeline_steps import find_vertex_champion  # noqa: PLC0415

    parent = "projects/test-project/locations/us-central1"
    listed: list = []
    requests = []

    def list_models(request, timeout=None, metadata=(), **kwargs):
        requests.append(request)
        return ListModelsResponse(models=listed)

    monkeypatch.setattr(ModelServiceGrpcTransport, "list_models", property(lambda _self: list_models))
    assert find_vertex_champion("test-project", "us-central1", "kjv-book") == ""  # nothing registered yet
    assert requests[-1].filter == 'display_name="kjv-book"' and requests[-1].order_by == "create_time desc"
    listed[:] = [Model(name=f"{parent}/models/2", display_name="kjv-book",
                       artifact_uri="gs://models/registered/kjv-book/20261203-101500-000000/serving/"),
                 Model(name=f"{parent}/models/1", display_name="kjv-book",
                       artifact_uri="gs://models/registered/kjv-book/20261101-101500-000000/serving")]
    # the export folder the registry's newest entry points into (what the evaluate step loads)
    assert find_vertex_champion("test-project", "us-central1", "kjv-book") == \
        "gs://models/registered/kjv-book/20261203-101500-000000"
    listed[:] = [Model(name=f"{parent}/models/3", display_name="kjv-book", artifact_uri="gs://elsewhere/saved_model")]
    with pytest.raises(ValueError, match=r"models/3.*not a bertkeras export's gs://.../serving"):
        find_vertex_champion("test-project", "us-central1", "kjv-book")
    with pytest.raises(ValueError, match="model_display_name"):
        find_vertex_champion("test-project", "us-central1", "../kjv")


def _tiny_pretrained(tmp_path, minilm_dir) -> str:
    """A (tiny, untrained) model folder as a pretrained model: model.keras + MiniLM's WordPiece encoder."""
    from trainer.model.backbone import Transformer  # noqa: PLC0415
    from trainer.tasks.model import build_model  # noqa: PLC0415
    from trainer.model.config import TransformerConfig  # noqa: PLC0415
    from trainer.text.factory import EncoderConfig, build_encoder  # noqa: PLC0415

    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    tiny = TransformerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=64)
    build_model(Transformer(tiny)).save(str(pretrained / "model.keras"))
    build_encoder(EncoderConfig(vocab_file=os.path.join(minilm_dir, "vocab.txt"))).save(str(pretrained / "encoder"))
    return str(pretrained)


def _short_verses(chapters: int = 300) -> list[str]:
    from components.corpora import kjv_chapters  # noqa: PLC0415

    return [v for _, vs in kjv_chapters()[:chapters] for v in vs if len(v.split()) < 25]


def _write_tsv(tmp_path, name: str, rows: list[tuple[str, str]], train: int) -> tuple[str, str]:
    """Shuffled rows -> <name>_train.tsv (the first ``train``) and <name>_eval.tsv; -> their paths."""
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    paths = []
    for split, part in (("train", rows[:train]), ("eval", rows[train:])):
        path = tmp_path / f"{name}_{split}.tsv"
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in part))
        paths.append(str(path))
    return paths[0], paths[1]


def test_finetuning_pipeline_runs_locally_with_kfp_local(minilm_dir, tmp_path):
    """A real run: import a (tiny) pretrained model, prepare records with Beam, fine-tune, evaluate, gate, register."""
    from pipelines.local import run_local  # noqa: PLC0415

    pretrained = _tiny_pretrained(tmp_path, minilm_dir)
    verses = _short_verses()
    rows = [(v, "question") for v in verses if v.endswith("?")][:120] + [(v, "statement") for v in verses if "?" not in v][:120]
    train, eval_ = _write_tsv(tmp_path, "question", rows, 180)
    spec = {
        "pipeline": "finetuning", "component_image": "python:3.11", "pretrained_model": pretrained,
        "finetuning_tasks": [{"train": train, "eval": eval_, "data": {"task": "question", "max_seq_length": 32}}],
        "finetuning": {"steps": 120, "log_every": 40, "checkpoint_every": 120, "data": {"global_batch_size": 16},
                       "optimizer": {"learning_rate": 0.003}, "tasks": [{"name": "question", "kind": "sentence"}]},
        "thresholds": {"question.accuracy": 0.0}, "registry_dir": str(tmp_path / "registry"),
        "champion_tolerance": 0.01,
    }
    config = PipelineConfig.from_dict(spec)
    result = run_local(config, str(tmp_path / "root"))
    artifacts = result["artifacts"]
    assert {"train/model", "evaluate/report", "evaluate/report_markdown", "local-register/executor_output.json"} <= set(artifacts)
    gate = json.load(open(artifacts["evaluate/executor_output.json"]))["parameterValues"]
    assert gate["passed"] is True and json.loads(gate["summary"])["metrics"]["question.accuracy"] > 0
    report = open(artifacts["evaluate/report"]).read()
    assert "Evaluation report" in report and "data:image/png;base64," in report
    # Each task's baseline, fit on the records the model trained on, in the gate's metrics and the report.
    metrics = json.loads(gate["summary"])["metrics"]
    assert 0 < metrics["question.baseline_accuracy"] <= 1 and "question.accuracy_over_baseline" in metrics
    assert "TF-IDF uni+bigrams" in report and "baseline_accuracy" in report
    # what each stage adds: from the majority class through the baseline to this model, trained from the import
    assert "What each stage adds" in report and "this model (trained from " in report
    assert "this model (trained from scratch)" not in report
    # The first run has no champion to compare with; the second (the same recipe) is not worse and becomes v2; a
    # deliberately bad one (one step) is refused, and the registry's latest version stays v2.
    assert "question.accuracy_vs_champion" not in metrics and "Champion: none registered yet" in report
    registry = tmp_path / "registry" / config.model_display_name
    second = run_local(config, str(tmp_path / "root2"))["artifacts"]
    summary = json.loads(json.load(open(second["evaluate/executor_output.json"]))["parameterValues"]["summary"])
    assert summary["passed"] and abs(summary["metrics"]["question.accuracy_vs_champion"]) <= 0.01
    assert "registered champion" in open(second["evaluate/report"]).read()
    assert sorted(os.listdir(registry)) == ["v1", "v2"]
    bad = PipelineConfig.from_dict({**spec, "finetuning": {**spec["finetuning"], "steps": 1, "checkpoint_every": 1}})
    third = run_local(bad, str(tmp_path / "root3"))["artifacts"]
    summary = json.loads(json.load(open(third["evaluate/executor_output.json"]))["parameterValues"]["summary"])
    assert not summary["passed"] and summary["metrics"]["question.accuracy_vs_champion"] < -0.01
    assert any("accuracy_vs_champion" in reason for reason in summary["reasons"])
    assert sorted(os.listdir(registry)) == ["v1", "v2"]
    registered = tmp_path / "registry" / "bertkeras-model" / "v1"
    assert (registered / "model.keras").exists() and (registered / "serving" / "saved_model.pb").exists()


def test_report_rows_say_what_each_stage_adds():
    from components.pipeline_steps import FROM_SCRATCH, stage_rows  # noqa: PLC0415

    metrics = {"examples": 600, "book": {"accuracy": 0.74, "macro_f1": 0.73, "loss": 0.8, "majority_accuracy": 0.17,
                                         "baseline": "TF-IDF", "baseline_accuracy": 0.72, "baseline_macro_f1": 0.71},
               "masked_lm": {"accuracy": 0.3, "loss": 4.0}}  # no baseline: no stage rows
    compared = {FROM_SCRATCH: {"book": {"accuracy": 0.18, "macro_f1": 0.05}},
                "champion": {"book": {"accuracy": 0.75, "macro_f1": 0.74}}}
    rows = stage_rows(metrics, compared, "gs://b/minilm")
    assert rows == [
        ("book", "majority class", {"accuracy": 0.17}),
        ("book", "baseline: TF-IDF", {"accuracy": 0.72, "macro_f1": 0.71}),
        ("book", "same recipe from scratch (no pretrained weights)", {"accuracy": 0.18, "macro_f1": 0.05}),
        ("book", "this model (trained from gs://b/minilm)", {"accuracy": 0.74, "macro_f1": 0.73}),
        ("book", "registered champion", {"accuracy": 0.75, "macro_f1": 0.74}),
    ]
    assert [stage for _, stage, _ in stage_rows(metrics, {})] == ["majority class", "baseline: TF-IDF",
                                                                  "this model (trained from scratch)"]


def test_three_task_finetuning_pipeline_runs_locally_with_kfp_local(minilm_dir, tmp_path):
    """Two sentence tasks and a token task: one ParallelFor prepares all six splits, one train step fits the
    three heads together, the evaluation gates each task (the pipeline's and the tasks' own thresholds), and
    the gated model is registered."""
    from pipelines.local import run_local  # noqa: PLC0415

    pretrained = _tiny_pretrained(tmp_path, minilm_dir)
    verses = _short_verses()
    questions = [(v, "question") for v in verses if v.endswith("?")][:60] + [(v, "statement") for v in verses if "?" not in v][:60]
    lord = [(v, "lord") for v in verses if "LORD" in v][:60] + [(v, "other") for v in verses if "LORD" not in v][:60]
    tasks = {"question": _write_tsv(tmp_path, "question", questions, 90), "lord": _write_tsv(tmp_path, "lord", lord, 90)}
    for split, part in (("train", verses[:90]), ("eval", verses[90:120])):
        lines = ["".join(f"{w}\t{'B-CAP' if w[0].isupper() else 'O'}\n" for w in v.replace(",", " ").split()) for v in part]
        (tmp_path / f"case_{split}.conll").write_text("\n".join(lines))
    tasks["case"] = (str(tmp_path / "case_train.conll"), str(tmp_path / "case_eval.conll"))
    config = PipelineConfig.from_dict({
        "pipeline": "finetuning", "component_image": "python:3.11", "pretrained_model": pretrained,
        "finetuning_tasks": [
            {"train": tasks["question"][0], "eval": tasks["question"][1], "thresholds": {"accuracy": 0.0},
             "data": {"task": "question", "max_seq_length": 32}},
            {"train": tasks["case"][0], "eval": tasks["case"][1], "thresholds": {"span_f1": 0.0},
             "data": {"task": "case", "level": "token", "input_format": "conll", "max_seq_length": 32}},
            {"train": tasks["lord"][0], "eval": tasks["lord"][1], "data": {"task": "lord", "max_seq_length": 32}},
        ],
        # The heads in another order than the tasks: data.train_weights follow this order.
        "finetuning": {"steps": 20, "log_every": 10, "checkpoint_every": 20, "optimizer": {"learning_rate": 0.003},
                       "data": {"global_batch_size": 16, "train_weights": [1.0, 2.0, 1.0]},
                       "tasks": [{"name": "lord", "kind": "sentence"}, {"name": "question", "kind": "sentence"},
                                 {"name": "case", "kind": "token"}]},
        "thresholds": {"lord.accuracy": 0.0}, "registry_dir": str(tmp_path / "registry"), "model_display_name": "three",
    })
    assert config.gate_thresholds() == {"lord.accuracy": 0.0, "question.accuracy": 0.0, "case.span_f1": 0.0}
    artifacts = run_local(config, str(tmp_path / "root"))["artifacts"]
    prepared = [k for k in artifacts if k.startswith("for-loop-") and k.endswith("/prepare-finetuning-data")]
    assert len(prepared) == 3  # one loop iteration per task (train split; eval is prepare-finetuning-data-2)
    trained = yaml.safe_load(open(os.path.join(artifacts["train/model"], "training_config.yaml")))
    order = [json.load(open(os.path.join(d, "manifest.json")))["task"] for d in trained["data"]["train"]]
    assert order == ["lord", "question", "case"] and len(trained["data"]["eval"]) == 3
    gate = json.load(open(artifacts["evaluate/executor_output.json"]))["parameterValues"]
    summary = json.loads(gate["summary"])
    assert gate["passed"] is True and summary["reasons"] == []
    metrics = summary["metrics"]
    assert {"question.accuracy", "question.macro_f1", "lord.accuracy", "case.accuracy", "case.span_f1"} <= set(metrics)
    assert all(0 < metrics[f"{task}.accuracy"] <= 1 for task in ("question", "lord", "case"))
    report = open(artifacts["evaluate/report_markdown"]).read()
    assert "lord.accuracy >= 0.0" in report and "question.accuracy >= 0.0" in report and "case.span_f1 >= 0.0" in report
    registered = tmp_path / "registry" / "three" / "v1"
    assert json.load(open(artifacts["local-register/executor_output.json"]))["parameterValues"]["Output"] == str(registered)
    assert (registered / "serving" / "saved_model.pb").exists()
    assert {f"{task}_labels.txt" for task in ("question", "lord", "case")} <= set(os.listdir(registered))


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
        assert submit(config, target, {"model_display_name": "kjv-v2"}) == {"target": "kubeflow", "run_id": "run-1"}
        run = [b for m, p, b in server.requests if m == "POST" and p.startswith("/apis/v2beta1/runs")][-1]
        assert run["pipeline_spec"]["pipelineInfo"]["name"] == "bertkeras-finetuning"
        assert run["runtime_config"]["parameters"]["model_display_name"] == "kjv-v2"
        defaults = run["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]["finetuning_tasks"]["defaultValue"]
        assert [t["task"] for t in defaults] == ["book", "case"]
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


def test_register_uploads_the_serving_model_to_the_vertex_model_registry(vertex, gcs_emulator, vertex_model_service):
    from components.pipeline_steps import register  # noqa: PLC0415

    sent, name = vertex_model_service, VERTEX_MODEL
    image = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"
    bucket = gcs_emulator.create_bucket("models")
    bucket.blob("run-1/export/serving/saved_model.pb").upload_from_string(b"pb")
    with pytest.raises(ValueError, match="gs://models/run-1/export: not a complete model folder"):
        register("gs://models/run-1", "test-project", "us-central1", "kjv", image)  # no completion marker yet
    assert not sent
    bucket.blob("run-1/export/_COMPLETE").upload_from_string(b"{}")
    assert register("gs://models/run-1", "test-project", "us-central1", "kjv", image) == name
    model = sent[-1].model
    assert model.artifact_uri == "gs://models/run-1/export/serving" and model.display_name == "kjv"
    assert model.container_spec.image_uri == image
    with pytest.raises(ValueError, match="must be on GCS"):
        register("/tmp/run-1", "test-project", "us-central1", "kjv", image)


def test_the_demo_terminal_shows_task_progress_and_training_lines_only():
    from pipelines.demo import progress_line  # noqa: PLC0415

    log = ["07:30:30.309 - INFO - Executing task \x1b[96m'importer'\x1b[0m",
           "07:30:30.311 - INFO - Executing task \x1b[96m'convert-checkpoint'\x1b[0m",
           "task_executor.py:100: UserWarning: Task 'convert-checkpoint': settings ['display_name'] have no effect",
           '    {"outputs": {"artifacts": {"model": {"artifacts": [{"name": "model",',
           "    [KFP Executor 2026-12-03 06:29:01,035 INFO]: Sharding callback duration: 886 microseconds",
           "    [train] step 30/200 (15%) masked_lm=7.0511 loss=7.7383 lr=4.72e-05 9.6 ex/s",
           "07:30:37.636 - INFO - Task \x1b[96m'convert-checkpoint'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
           "07:30:37.638 - INFO - Task \x1b[96m'convert-checkpoint'\x1b[0m outputs:",
           "07:31:37.636 - INFO - Task \x1b[96m'evaluate'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m"]
    shown = [line for line in map(progress_line, log) if line]
    assert shown == ["  run  convert-checkpoint",
                     "      [train] step 30/200 (15%) masked_lm=7.0511 loss=7.7383 lr=4.72e-05 9.6 ex/s",
                     "  done convert-checkpoint", "  done evaluate (FAILURE)"]
