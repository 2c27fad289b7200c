"""The typed configuration of a pipeline (what to build, with which images and resources, and the default
parameter values) and of its submission (where it runs).

Each step's section is that step's own config class (see docs/configuration.md), typed all the way down, so
a typo or a bad value in any step is an error when the config is read, not an hour into a run. The fields a
step gets from the pipeline (its artifact paths, the Beam runner) stay at their defaults here: validation
checks each section with placeholders in their place, and the compiled pipeline passes each section to its
step as one line of JSON."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Literal, TypeVar

from components.pipeline_steps import CHAMPION_SUFFIX
from components.preprocessing.config import FinetuningDataConfig, PretrainingDataConfig, VocabularyConfig
from trainer.config import Config, ConfigError, option
from trainer.tasks import REGISTRY
from trainer.training.config import TrainConfig

PipelineName = Literal["pretraining", "finetuning", "full"]
StepConfig = TypeVar("StepConfig", VocabularyConfig, PretrainingDataConfig, FinetuningDataConfig, TrainConfig)
PLACEHOLDER = "<artifact>"
# The package version (pyproject.toml; a test keeps them equal), the default tag of our images here and in Cloud
# Build (_TAG): Artifact Registry tags are immutable, so a version tag names one build for good; :latest names any.
RELEASE = "0.1.0"
DATAFLOW = "DataflowRunner"

# Fields each section leaves to the pipeline (a value set there would be silently replaced), and who sets them.
_BEAM = {"inputs": "the input artifact", "output_dir": "the step's output artifact",
         "encoder.assets_dir": "the pipeline's encoder", "runner": "beam_runner", "beam_args": "beam_args"}
_TRAINING = {"output_dir": "the model artifact", "init_from": "checkpoint / pretrained_model / the pretraining run",
             "encoder_dir": "the pipeline's encoder", "data.train": "the prepared records"}
PIPELINE_FIELDS: dict[str, dict[str, str]] = {
    "vocabulary": {"inputs": "corpus", "output_dir": "the encoder artifact"},
    "pretraining_data": _BEAM,
    "pretraining": _TRAINING,
    "finetuning": {**_TRAINING, "data.eval": "the prepared evaluation records"},
    "task_data": _BEAM,
}


@dataclasses.dataclass(frozen=True)
class Threshold(Config):
    """One condition of the gate: the model is registered only when the metric reaches ``minimum``."""

    metric: str = option("", "'task.metric' in the pipeline's thresholds (e.g. book.accuracy); 'metric' in a task's own")
    minimum: float = option(0.0, "the lowest value that passes")


@dataclasses.dataclass(frozen=True)
class FinetuningTaskData(Config):
    """One fine-tuning task: its labelled data (TSV/CSV/JSONL or CoNLL), its preprocessing and its own gate."""

    train: str = option("", "labelled training file or folder (local path or gs://)")
    eval: str = option("", "labelled evaluation file or folder")
    data: FinetuningDataConfig = option(FinetuningDataConfig(), "preprocessing (task, level, input_format, ...)")
    thresholds: tuple[Threshold, ...] = option((), "this task's gate, {metric: minimum}, e.g. {accuracy: 0.4}")

    @property
    def name(self) -> str:
        return self.data.task

    @classmethod
    def from_dict(cls, data: Mapping[str, object], source: str = "<dict>", prefix: str = "") -> FinetuningTaskData:
        return super().from_dict(_threshold_list(data, source, prefix), source, prefix)

    def check(self) -> list[str]:
        errors = [] if self.train else ["train: required"]
        if not self.eval:
            errors.append("eval: required (the gate needs held-out data)")
        for i, threshold in enumerate(self.thresholds):
            if not threshold.metric or "." in threshold.metric:
                errors.append(f"thresholds[{i}]: {threshold.metric!r} must be a metric of this task only, "
                              "e.g. accuracy (the task name is implied)")
        return errors + _pipeline_fields_set(self.data, "data", PIPELINE_FIELDS["task_data"])

    def validate(self, prefix: str = "") -> FinetuningTaskData:
        errors = [prefix + e for e in self.check()] + _errors(with_pipeline_paths(self.data), f"{prefix}data.")
        if errors:
            raise ConfigError(f"invalid {type(self).__name__}:\n" + "\n".join(f"  {e}" for e in errors))
        return self


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
class ServiceAccounts(Config):
    """The identities the pipeline's jobs run as (`terraform output service_accounts`). Without them Vertex AI
    runs the train custom job as its Custom Code Service Agent and Dataflow runs workers as the Compute Engine
    default account, both far broader than the job needs. The pipeline itself runs as SubmitConfig.service_account."""

    training: str = option("", "the train step's Vertex AI custom job (required on Vertex with resources.machine_type), e.g. bertkeras-training@P.iam.gserviceaccount.com")
    dataflow: str = option("", "the Dataflow workers (required with beam_runner=DataflowRunner; becomes --service_account_email), e.g. bertkeras-dataflow@P.iam.gserviceaccount.com")

    def check(self) -> list[str]:
        errors = []
        for name in ("training", "dataflow"):
            value = getattr(self, name)
            if value and not re.fullmatch(r"[a-z0-9][a-z0-9-]*@[a-z0-9.-]+\.gserviceaccount\.com", value):
                errors.append(f"{name}: {value!r} is not a service account email (name@project.iam.gserviceaccount.com)")
        return errors


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Config):
    """`bertkeras pipeline compile|run|submit|schedule`: which pipeline, its images and its default parameters."""

    pipeline: PipelineName = option("finetuning", "pretraining, finetuning or full (pretraining then fine-tuning)")
    component_image: str = option(f"bertkeras-component:{RELEASE}", "image of the components (infra/docker/component.Dockerfile), by version tag")
    trainer_image: str = option("", "image of the train step on Vertex (infra/docker/trainer.Dockerfile; '' = component_image)")
    corpus: str = option("", "pretraining corpus: a text file or folder (Google's format)")
    checkpoint: str = option("", "pretrained checkpoint to convert first (TF1 / HF / GPT-1 folder); '' = none")
    reference_outputs: str = option("", "reference outputs (.npz) the converted checkpoint must match")
    pretrained_model: str = option("", "finetuning: a model folder (model.keras + encoder/) instead of a checkpoint")
    vocabulary: VocabularyConfig = option(VocabularyConfig(), "the vocabulary step (pretraining without a checkpoint)")
    pretraining_data: PretrainingDataConfig = option(PretrainingDataConfig(), "the pretraining records step")
    pretraining: TrainConfig = option(TrainConfig(), "the pretraining run")
    pretraining_eval_batches: int = option(20, "batches of the pretraining records the pretraining evaluation reads (0 = all)")
    finetuning_tasks: tuple[FinetuningTaskData, ...] = option((), "the fine-tuning tasks, any number, trained together")
    finetuning: TrainConfig = option(TrainConfig(), "the fine-tuning run (train_weights: in its tasks' order)")
    compare_from_scratch: bool = option(False, "finetuning: also train from scratch and report it beside the pretrained model")
    thresholds: tuple[Threshold, ...] = option((), "gate: {'task.metric': minimum} (with each task's own); register runs only when all hold")
    register_target: Literal["local", "vertex"] = option("local", "local: copy into registry_dir; vertex: Vertex AI Model Registry")
    registry_dir: str = option("", "local registry folder (register_target=local)")
    champion_tolerance: float | None = option(None, "compare with the registered model (the champion: the latest version in registry_dir, or in the Vertex AI Model Registry under model_display_name): each gated metric may be at most this much below the champion's on the same evaluation data (adds '<task.metric>_vs_champion >= -tolerance' to the gate; null: no comparison, except that `pipeline schedule create` sets 0.02 unless given --no_champion; the first run has no champion)")
    model_store: str = option("", "register_target=vertex: gs:// folder outside the pipeline root (whose artifacts expire), e.g. gs://P-bertkeras-models/registered; the export is copied there and the Model Registry points at the copy")
    model_display_name: str = option("bertkeras-model", "display name of the registered model")
    serving_image: str = option("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest", "Vertex serving container (Google publishes its prebuilt ones only as :latest; the version is in the name)")
    beam_runner: str = option("DirectRunner", "DirectRunner (in the component) or DataflowRunner (launched from it)")
    beam_args: tuple[str, ...] = option((), "Beam flags for Dataflow: --project=..,--region=..,--temp_location=gs://..,--sdk_container_image=.. (the workers' account comes from service_accounts.dataflow)")
    resources: TrainingResources = option(TrainingResources(), "train step resources on Vertex")
    service_accounts: ServiceAccounts = option(ServiceAccounts(), "the accounts the train custom job and the Dataflow workers run as")

    @classmethod
    def from_dict(cls, data: Mapping[str, object], source: str = "<dict>", prefix: str = "") -> PipelineConfig:
        return super().from_dict(_threshold_list(data, source, prefix), source, prefix)

    def replace_path(self, path: list[str], value: object, text: str, source: str, prefix: str = "") -> PipelineConfig:
        if path == ["thresholds"]:
            value = _threshold_list({"thresholds": value}, source, prefix)["thresholds"]
        return super().replace_path(path, value, text, source, prefix)

    @property
    def fine_tunes(self) -> bool:
        return self.pipeline in ("finetuning", "full")

    def step_sections(self) -> dict[str, Config]:
        """Each step's section as the step sees it, with placeholders where the pipeline supplies paths."""
        return {"vocabulary": with_pipeline_paths(self.vocabulary),
                "pretraining_data": with_pipeline_paths(self.pretraining_data),
                "pretraining": with_pipeline_paths(self.pretraining),
                "finetuning": with_pipeline_paths(self.finetuning, sources=max(len(self.finetuning_tasks), 1))}

    def validate(self, prefix: str = "") -> PipelineConfig:
        """Every error at once: this config's own, each step section's (checked with placeholder paths), each
        task's and the resources'."""
        errors = [prefix + e for e in self.check()]
        for name, section in self.step_sections().items():
            errors.extend(_errors(section, f"{prefix}{name}."))
        for i, task in enumerate(self.finetuning_tasks):
            errors.extend(_errors(task, f"{prefix}finetuning_tasks[{i}]."))
        errors.extend(_errors(self.resources, f"{prefix}resources."))
        errors.extend(_errors(self.service_accounts, f"{prefix}service_accounts."))
        if errors:
            raise ConfigError(f"invalid {type(self).__name__}:\n" + "\n".join(f"  {e}" for e in errors))
        return self

    def check(self) -> list[str]:
        errors = []
        if self.pipeline in ("pretraining", "full") and not self.corpus:
            errors.append("corpus: required for the pretraining pipelines")
        if self.fine_tunes:
            if not self.finetuning_tasks:
                errors.append("finetuning_tasks: at least one task")
            if self.pipeline == "finetuning" and not (self.checkpoint or self.pretrained_model):
                errors.append("checkpoint/pretrained_model: fine-tuning starts from a checkpoint or a model folder")
            errors.extend(self._check_tasks())
        for name in ("vocabulary", "pretraining_data", "pretraining", "finetuning"):
            errors.extend(_pipeline_fields_set(getattr(self, name), name, PIPELINE_FIELDS[name]))
        if self.register_target == "local" and self.pipeline != "pretraining" and not self.registry_dir:
            errors.append("registry_dir: required with register_target=local")
        if self.champion_tolerance is not None:
            if self.champion_tolerance < 0:
                errors.append(f"champion_tolerance: must be >= 0, got {self.champion_tolerance}")
        errors.extend(self._check_thresholds())
        return errors + self._check_identities() + self._check_model_store()

    def _check_identities(self) -> list[str]:
        """Dataflow workers run as service_accounts.dataflow, never as the project's default account, and the
        account has one source (a hand-written flag in beam_args would silently compete with it)."""
        errors = []
        if self.beam_runner == DATAFLOW and not self.service_accounts.dataflow:
            errors.append("service_accounts.dataflow: required with beam_runner=DataflowRunner (the workers would "
                          "otherwise run as the Compute Engine default service account)")
        for flag in self.beam_args:
            if flag.split("=", 1)[0] == "--service_account_email":
                errors.append(f"beam_args: {flag!r}: set service_accounts.dataflow instead (it becomes "
                              "--service_account_email on Dataflow)")
        return errors

    def _check_model_store(self) -> list[str]:
        if self.register_target != "vertex" or not self.fine_tunes:
            return []
        if not self.model_store:
            return ["model_store: required with register_target=vertex (the Model Registry must not point into "
                    "the pipeline root, whose artifacts expire)"]
        if not self.model_store.startswith("gs://"):
            return [f"model_store: must be a gs:// folder, got {self.model_store!r}"]
        return []

    def target_errors(self, target: str) -> list[str]:
        """What only the compile target decides: on Vertex the train step with resources is a custom job, which
        must run as service_accounts.training (else Vertex AI's Custom Code Service Agent), and a training
        account without resources would go unused (the step would run in the pipeline's pod, as its account)."""
        if target != "vertex":
            return []
        if self.resources.machine_type and not self.service_accounts.training:
            return [f"service_accounts.training: required for the train step's Vertex AI custom job (resources."
                    f"machine_type={self.resources.machine_type}); without it the job runs as the Vertex AI Custom "
                    "Code Service Agent"]
        if self.service_accounts.training and not self.resources.machine_type:
            return ["resources.machine_type: required with service_accounts.training (only a custom job runs as "
                    "it; without resources the train step runs in the pipeline's own pod, as the pipeline's account)"]
        return []

    def beam_step_args(self) -> list[str]:
        """The Beam flags of the preprocessing steps: beam_args, and on Dataflow the workers' account."""
        if self.beam_runner != DATAFLOW:
            return list(self.beam_args)
        return [*self.beam_args, f"--service_account_email={self.service_accounts.dataflow}"]

    def _check_tasks(self) -> list[str]:
        """The tasks train one model together: distinct names, one sequence length, and exactly the sentence and
        token tasks of the fine-tuning run (other kinds, such as masked LM, may join them)."""
        errors, seen = [], {}
        named = [task for task in self.finetuning_tasks if task.name]  # a missing name is data.task's own error
        for i, task in enumerate(self.finetuning_tasks):
            if task.name and task.name in seen:
                errors.append(f"finetuning_tasks[{i}].data.task: {task.name!r} is also finetuning_tasks[{seen[task.name]}]; "
                              "task names must be distinct")
            seen.setdefault(task.name, i)
        lengths = {task.name: task.data.max_seq_length for task in named}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{name}: {length}" for name, length in lengths.items())
            errors.append(f"finetuning_tasks: data.max_seq_length differs between tasks ({detail}); they train one "
                          "model on shared batches, so give every task the same length")
        levels = {task.name: task.data.level for task in named}
        trained = {t.name: t.kind for t in self.finetuning.tasks}
        for name, level in levels.items():
            if name not in trained:
                errors.append(f"finetuning.tasks: no task named {name!r} although finetuning_tasks prepares its "
                              f"records (finetuning.tasks: {sorted(trained)})")
            elif trained[name] != level:
                errors.append(f"finetuning.tasks: {name!r} is kind {trained[name]!r} but finetuning_tasks prepares "
                              f"{level}-level records for it")
        for i, task in enumerate(self.finetuning.tasks):
            if REGISTRY[task.kind].has_label_names and task.name not in levels:  # only fine-tuning records feed it
                errors.append(f"finetuning.tasks[{i}]: {task.name!r} ({task.kind}) has no records; add it to "
                              f"finetuning_tasks (prepared: {sorted(levels)})")
        return errors

    def _check_thresholds(self) -> list[str]:
        section = "finetuning" if self.fine_tunes else "pretraining"
        known = sorted(t.name for t in getattr(self, section).tasks)
        errors = []
        for threshold in self.thresholds:
            task = threshold.metric.split(".", 1)[0]
            if "." not in threshold.metric:
                errors.append(f"thresholds: {threshold.metric!r} must be 'task.metric', e.g. question.accuracy")
            elif task not in known:
                errors.append(f"thresholds: {threshold.metric!r} names task {task!r}, which the {section} config "
                              f"does not have (tasks: {known})")
        keys = [t.metric for t in self.thresholds]
        if self.fine_tunes:
            keys += [f"{task.name}.{t.metric}" for task in self.finetuning_tasks for t in task.thresholds]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            errors.append(f"thresholds: {repeated} given more than once (in thresholds and in a task's thresholds)")
        return errors

    def gate_thresholds(self) -> dict[str, float]:
        """Every threshold, the pipeline's and each task's, as the evaluate step reads them: 'task.metric' -> minimum;
        with champion_tolerance, also 'task.metric_vs_champion' -> -tolerance for each of them."""
        gate = {t.metric: t.minimum for t in self.thresholds}
        if self.fine_tunes:
            gate.update({f"{task.name}.{t.metric}": t.minimum for task in self.finetuning_tasks for t in task.thresholds})
        if self.champion_tolerance is not None:
            # (not for <metric>_over_baseline: on the same data the baseline is the same, so <metric> covers it)
            gate.update({f"{key}{CHAMPION_SUFFIX}": -self.champion_tolerance for key in list(gate)
                         if not key.endswith((CHAMPION_SUFFIX, "_over_baseline"))})
        return gate


def with_pipeline_paths(section: StepConfig, sources: int = 1) -> StepConfig:
    """``section`` with placeholders where the pipeline supplies artifact paths (``sources`` record folders for
    a training run), so the step's own validation runs before any artifact exists."""
    if isinstance(section, TrainConfig):
        return dataclasses.replace(section, output_dir=PLACEHOLDER,
                                   data=dataclasses.replace(section.data, train=(PLACEHOLDER,) * sources))
    paths = {"inputs": (PLACEHOLDER,), "output_dir": PLACEHOLDER}
    if not isinstance(section, VocabularyConfig):
        paths["encoder"] = dataclasses.replace(section.encoder, assets_dir=PLACEHOLDER)
    return dataclasses.replace(section, **paths)


def step_json(section: Config, name: str) -> str:
    """A step section as one line of JSON (valid YAML), the form of the compiled pipeline's parameters (KFP's
    compiled-pipeline header comment breaks on multi-line parameter defaults), without the fields the pipeline
    supplies, so a parameter shows only what may be changed."""
    data = section.to_dict()
    for field in PIPELINE_FIELDS[name]:
        *parents, leaf = field.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        del node[leaf]
    return json.dumps(data, sort_keys=False)


def _pipeline_fields_set(section: Config, name: str, fields: Mapping[str, str]) -> list[str]:
    default = type(section)()
    errors = []
    for field, supplier in fields.items():
        value, blank = section, default
        for part in field.split("."):
            value, blank = getattr(value, part), getattr(blank, part)
        if value != blank:
            errors.append(f"{name}.{field}: set by the pipeline ({supplier}); leave it out (got {value!r})")
    return errors


def _errors(config: Config, prefix: str) -> list[str]:
    try:
        config.validate(prefix=prefix)
    except ConfigError as err:
        return [line.strip() for line in str(err).splitlines()[1:]]
    return []


def _threshold_list(data: Mapping[str, object], source: str, prefix: str) -> Mapping[str, object]:
    """Reads ``thresholds: {book.accuracy: 0.35}`` (the YAML form; empty or null: none) as the typed list of
    :class:`Threshold`."""
    if not isinstance(data, Mapping) or "thresholds" not in data:
        return data
    if data["thresholds"] is None:
        return {**data, "thresholds": []}
    if not isinstance(data["thresholds"], Mapping):
        return data
    entries = []
    for metric, minimum in data["thresholds"].items():
        if isinstance(minimum, bool) or not isinstance(minimum, (int, float)):
            raise ConfigError(f"{source}: {prefix}thresholds: {metric!r} must be a number, got {minimum!r}")
        entries.append({"metric": str(metric), "minimum": minimum})
    return {**data, "thresholds": entries}
