"""The typed configuration of a pipeline (what to build, with which images and resources, and the default
parameter values) and of its submission (where it runs). Step configs are nested mappings with the same fields
as each step's own config (see docs/configuration.md); they become YAML parameters of the compiled pipeline."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from trainer.config import Config, ConfigError, option

PipelineName = Literal["pretraining", "finetuning", "full"]


@dataclasses.dataclass(frozen=True)
class FinetuningTaskData(Config):
    """One fine-tuning task's labelled data (TSV/CSV/JSONL or CoNLL) and its preprocessing settings."""

    train: str = option("", "labelled training file or folder (local path or gs://)")
    eval: str = option("", "labelled evaluation file or folder")
    data: Any = option(None, "FinetuningDataConfig fields (task, level, input_format, text_field, ...)")

    def check(self) -> list[str]:
        errors = [] if self.train else ["train: required"]
        if not self.eval:
            errors.append("eval: required (the gate needs held-out data)")
        if not isinstance(self.data, dict) or not self.data.get("task"):
            errors.append("data: a mapping with at least `task` (and `level` for token tasks)")
        return errors


@dataclasses.dataclass(frozen=True)
class TrainingResources(Config):
    """Where the train step runs on Vertex AI (ignored by local runs, where it runs in process)."""

    machine_type: str = option("", "e.g. n1-standard-8, a2-highgpu-1g, ct5lp-hightpu-4t (TPU VM), cloud-tpu; '' = run in the pipeline's own pod")
    accelerator_type: str = option("", "e.g. NVIDIA_TESLA_T4, TPU_V3 (with machine_type cloud-tpu); '' for TPU VM machine types")
    accelerator_count: int = option(0, "accelerators per replica")
    replica_count: int = option(1, "workers (MultiWorkerMirroredStrategy when > 1)")

    @property
    def tpu(self) -> bool:
        return self.machine_type.startswith("ct") or self.machine_type == "cloud-tpu" or self.accelerator_type.startswith("TPU")


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Config):
    """`bertkeras pipeline compile|run|submit|schedule`: which pipeline, its images and its default parameters."""

    pipeline: PipelineName = option("finetuning", "pretraining, finetuning or full (pretraining then fine-tuning)")
    component_image: str = option("bertkeras-component:latest", "image of the components (infra/docker/component.Dockerfile)")
    trainer_image: str = option("", "image of the train step on Vertex (infra/docker/trainer.Dockerfile; '' = component_image)")
    corpus: str = option("", "pretraining corpus: a text file or folder (Google's format)")
    checkpoint: str = option("", "pretrained checkpoint to convert first (TF1 / HF / GPT-1 folder); '' = none")
    reference_outputs: str = option("", "reference outputs (.npz) the converted checkpoint must match")
    pretrained_model: str = option("", "finetuning: a model folder (model.keras + encoder/) instead of a checkpoint")
    vocabulary: Any = option(None, "VocabularyConfig fields (pretraining without a checkpoint)")
    pretraining_data: Any = option(None, "PretrainingDataConfig fields")
    pretraining: Any = option(None, "TrainConfig fields of the pretraining run")
    pretraining_eval_batches: int = option(20, "batches of the pretraining records the pretraining evaluation reads (0 = all)")
    finetuning_tasks: tuple[FinetuningTaskData, ...] = option((), "one or two fine-tuning tasks")
    finetuning: Any = option(None, "TrainConfig fields of the fine-tuning run (its tasks must match finetuning_tasks)")
    compare_from_scratch: bool = option(False, "finetuning: also train from scratch and report it beside the pretrained model")
    thresholds: Any = option(None, "gate: {'task.metric': minimum}; register runs only when all hold")
    register_target: Literal["local", "vertex"] = option("local", "local: copy into registry_dir; vertex: Vertex AI Model Registry")
    registry_dir: str = option("", "local registry folder (register_target=local)")
    model_display_name: str = option("bertkeras-model", "display name of the registered model")
    serving_image: str = option("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest", "Vertex serving container")
    beam_runner: str = option("DirectRunner", "DirectRunner (in the component) or DataflowRunner (launched from it)")
    beam_args: tuple[str, ...] = option((), "Beam flags for Dataflow: --project=..,--region=..,--temp_location=gs://..,--sdk_container_image=..")
    resources: TrainingResources = option(TrainingResources(), "train step resources on Vertex")

    def check(self) -> list[str]:
        errors = []
        if self.pipeline in ("pretraining", "full") and not self.corpus:
            errors.append("corpus: required for the pretraining pipelines")
        if self.pipeline in ("pretraining", "full") and not self.checkpoint and not self.vocabulary:
            errors.append("vocabulary: give VocabularyConfig fields, or a checkpoint whose vocabulary to use")
        if self.pipeline in ("finetuning", "full"):
            if not 1 <= len(self.finetuning_tasks) <= 2:
                errors.append(f"finetuning_tasks: one or two tasks, got {len(self.finetuning_tasks)}")
            if self.pipeline == "finetuning" and not (self.checkpoint or self.pretrained_model):
                errors.append("checkpoint/pretrained_model: fine-tuning starts from a checkpoint or a model folder")
            for i, task in enumerate(self.finetuning_tasks):
                errors.extend(f"finetuning_tasks[{i}].{e}" for e in task.check())
        for name in ("vocabulary", "pretraining_data", "pretraining", "finetuning", "thresholds"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                errors.append(f"{name}: must be a mapping, got {type(value).__name__}")
        if self.register_target == "local" and self.pipeline != "pretraining" and not self.registry_dir:
            errors.append("registry_dir: required with register_target=local")
        errors.extend(self._check_thresholds())
        return errors

    def finetuning_task_names(self) -> list[str]:
        return [t.data["task"] for t in self.finetuning_tasks if isinstance(t.data, dict) and t.data.get("task")]

    def training_task_names(self, section: str) -> list[str]:
        data = getattr(self, section) or {}
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if tasks is None:
            return ["masked_lm", "next_sentence"] if section == "pretraining" else []
        return [t.get("name", "") for t in tasks if isinstance(t, dict)]

    def _check_thresholds(self) -> list[str]:
        if not self.thresholds:
            return []
        section = "pretraining" if self.pipeline == "pretraining" else "finetuning"
        known = set(self.training_task_names(section))
        errors = []
        for key, value in self.thresholds.items():
            task = str(key).split(".", 1)[0]
            if "." not in str(key):
                errors.append(f"thresholds: {key!r} must be 'task.metric', e.g. question.accuracy")
            elif task not in known:
                errors.append(f"thresholds: {key!r} names task {task!r}, which the {section} config does not have "
                              f"(tasks: {sorted(known)})")
            if not isinstance(value, (int, float)):
                errors.append(f"thresholds: {key!r} must be a number, got {value!r}")
        return errors


def yaml_text(mapping: Any) -> str:
    """A step config as one line of JSON (valid YAML): KFP's compiled-pipeline header comment breaks on
    multi-line parameter defaults."""
    return json.dumps(mapping or {}, sort_keys=False)


def check_step_configs(config: PipelineConfig) -> None:
    """Validates each step's config with placeholder paths (the pipeline supplies the real ones), so a typo in
    a step field is an error at compile/submit time, not an hour into a run."""
    from components.preprocessing.finetuning import FinetuningDataConfig  # noqa: PLC0415
    from components.preprocessing.pretraining import PretrainingDataConfig  # noqa: PLC0415
    from components.preprocessing.vocabulary import VocabularyConfig  # noqa: PLC0415
    from trainer.training.config import TrainConfig  # noqa: PLC0415

    placeholder = {"inputs": ["<artifact>"], "output_dir": "<artifact>"}
    checks = [("vocabulary", VocabularyConfig, placeholder),
              ("pretraining_data", PretrainingDataConfig, {**placeholder, "encoder": {"assets_dir": "<artifact>"}}),
              ("pretraining", TrainConfig, {"output_dir": "<artifact>", "data": {"train": ["<artifact>"]}}),
              ("finetuning", TrainConfig, {"output_dir": "<artifact>", "data": {"train": ["<artifact>"]}})]
    for name, cls, paths in checks:
        value = getattr(config, name)
        if value is None:
            continue
        merged = _merge(value, paths)
        try:
            cls.from_dict(merged, source=f"pipeline config {name}").validate()
        except ConfigError as err:
            raise ConfigError(f"{name}: {err}") from None
    for i, task in enumerate(config.finetuning_tasks):
        try:
            FinetuningDataConfig.from_dict(_merge(task.data, {**placeholder, "encoder": {"assets_dir": "<artifact>"}}),
                                           source=f"finetuning_tasks[{i}].data").validate()
        except ConfigError as err:
            raise ConfigError(f"finetuning_tasks[{i}].data: {err}") from None
    if config.pipeline != "pretraining":
        configured = set(config.training_task_names("finetuning"))
        missing = [t for t in config.finetuning_task_names() if t not in configured]
        if missing:
            raise ConfigError(f"finetuning.tasks: no task named {missing} although finetuning_tasks prepares records for it")


def _merge(base: dict, paths: dict) -> dict:
    out = dict(base)
    for key, value in paths.items():
        if isinstance(value, dict):
            out[key] = {**(out.get(key) or {}), **value}
        else:
            out.setdefault(key, value)
            out[key] = value
    return out
