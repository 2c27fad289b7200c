"""Typed configuration of a training run: tasks with loss-weight schedules, input, optimizer, loop, runtime.

One run moves from pretraining to fine-tuning by scheduling each task's loss weight over the global step (the
seed's pretraining -> fine-tuning phases, made continuous): e.g. masked LM at weight 1 falling to 0 while a
classifier rises from 0 to 1. Records of several kinds can be mixed in one run (``data.train`` lists several
sources, sampled by ``data.train_weights``); a task whose features a source lacks gets weight 0 there.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import Config, option
from trainer.model.config import TransformerConfig
from trainer.tasks.config import ScheduleConfig, TaskConfig, TaskKind

__all__ = ["DataConfig", "EvaluateConfig", "OptimizerConfig", "RuntimeConfig", "ScheduleConfig", "TaskConfig",
           "TaskKind", "TrainConfig", "TrainingError"]

class TrainingError(RuntimeError):
    """The run cannot start or continue; the message says why."""


# Fields a resumed run may change (``on_existing=resume``): how long it trains (``steps``, raised to train longer:
# the learning rate then decays over the new length), how often it logs, checkpoints, evaluates and exports,
# and how it runs (the strategy and compilation give the same weights). Everything else must match the run's
# saved training_config.yaml. A name covers its sub-fields.
CHANGEABLE_ON_RESUME = (
    "on_existing", "output_dir", "steps", "epochs", "checkpoint_every", "keep_checkpoints", "log_every", "eval_batches",
    "export", "max_seq_length", "data.eval", "data.verify_records", "runtime.strategy", "runtime.tpu",
    "runtime.cpu_devices", "runtime.xla", "runtime.steps_per_loop", "runtime.last_block_at_read_positions",
)
OnExisting = Literal["resume", "fresh", "override"]

PRETRAINING_TASKS = (TaskConfig(name="masked_lm", kind="masked_lm"), TaskConfig(name="next_sentence", kind="next_sentence"))


@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Input records: record folders (with manifest.json) or file globs, local or gs://."""

    train: tuple[str, ...] = option((), "training sources: record folders or TFRecord globs (one entry per source)")
    train_weights: tuple[float, ...] = option((), "sampling weight of each source (default: equal)")
    eval: tuple[str, ...] = option((), "evaluation sources (same forms)")
    synthetic: bool = option(False, "random records shaped like the model and tasks (smoke tests, benchmarks)")
    synthetic_seq_length: int = option(128, "synthetic: tokens per example")
    synthetic_predictions: int = option(20, "synthetic: masked positions per example")
    global_batch_size: int = option(32, "examples per step over all replicas (static: the remainder is dropped)")
    length_buckets: int = option(
        0, "training and evaluation batches padded to the data, not the records' length: N buckets at N evenly spaced "
        "lengths up to the records' (e.g. 4 at 128: 32, 64, 96, 128); each batch holds examples of one bucket, padded "
        "to its length (a few shapes, each compiled once); evaluation sees every example once, grouped by length. 0: "
        "every batch at the records' length. A resumed run continues the input at the same example, but the batches "
        "it forms differ from an uninterrupted run's")
    shuffle_buffer: int = option(10000, "records in the shuffle buffer")
    seed: int = option(0, "seed of shuffling, sampling and synthetic data; the input order is a function of it")
    verify_records: bool = option(True, "before training, read every shard once: catches corrupt files early")
    dynamic_masking: bool = option(False, "make masked-LM targets on the fly (tensorflow-text, BERT's 80/10/10) for records without MLM features; needs the encoder")
    masked_lm_prob: float = option(0.15, "dynamic masking: share of tokens selected")
    max_predictions: int = option(20, "dynamic masking: masked positions per example (when no source has MLM features)")

    def check(self) -> list[str]:
        errors = []
        if not self.train and not self.synthetic:
            errors.append("train: give record folders/globs, or set synthetic=true")
        if self.train_weights and len(self.train_weights) != len(self.train):
            errors.append(f"train_weights: {len(self.train_weights)} weights for {len(self.train)} sources")
        if any(w <= 0 for w in self.train_weights):
            errors.append("train_weights: must all be > 0")
        if self.global_batch_size < 1:
            errors.append(f"global_batch_size: must be >= 1, got {self.global_batch_size}")
        if self.shuffle_buffer < 1:
            errors.append(f"shuffle_buffer: must be >= 1, got {self.shuffle_buffer}")
        if self.length_buckets < 0:
            errors.append(f"length_buckets: must be >= 0, got {self.length_buckets}")
        return errors


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Config):
    """BERT's recipe: AdamW (or LAMB for large batches), linear warm-up then linear decay, global-norm clipping."""

    name: Literal["adamw", "lamb"] = option("adamw", "adamw, or lamb for large batches")
    learning_rate: float = option(1e-4, "peak learning rate (after warm-up)")
    warmup_steps: int = option(0, "linear warm-up from 0 to learning_rate")
    end_learning_rate: float = option(0.0, "learning rate reached linearly at the last step")
    weight_decay: float = option(0.01, "decoupled weight decay (not on biases and layer-norm parameters)")
    beta_1: float = option(0.9, "Adam beta 1")
    beta_2: float = option(0.999, "Adam beta 2")
    epsilon: float = option(1e-6, "Adam epsilon")
    clip_norm: float = option(1.0, "clip the all-reduced gradients to this global norm (0: no clipping)")
    layer_decay: float = option(1.0, "layer-wise learning-rate decay for fine-tuning: the top encoder layer learns "
                                     "at learning_rate (the heads too, times head_learning_rate_multiplier), each "
                                     "layer below at layer_decay times the one above, the embeddings (and a masked-LM decoder tied to them) below the first "
                                     "layer; weight decay follows each rate (1.0: off; for backbones with layer_<i> "
                                     "variables)")
    head_learning_rate_multiplier: float = option(
        1.0, "fine-tuning: the task heads (every weight outside the backbone: classifiers and their own poolers, "
             "new or copied from init_from) learn at this multiple of learning_rate while the backbone learns at "
             "learning_rate (and layer_decay); weight decay follows each rate (1.0: off)")
    freeze_layers: int = option(0, "fine-tuning: keep the embeddings and the bottom freeze_layers encoder layers as "
                                   "loaded (not trained, and no backward pass through them): 0 trains everything; "
                                   "for backbones with layer_<i> variables; a masked-LM decoder tied to the "
                                   "embeddings stays frozen with them")

    def check(self) -> list[str]:
        errors = []
        if self.learning_rate <= 0:
            errors.append(f"learning_rate: must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            errors.append(f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.clip_norm < 0:
            errors.append(f"clip_norm: must be >= 0, got {self.clip_norm}")
        if not 0 < self.layer_decay <= 1:
            errors.append(f"layer_decay: must be in (0, 1], got {self.layer_decay}")
        if self.head_learning_rate_multiplier <= 0:
            errors.append(f"head_learning_rate_multiplier: must be > 0, got {self.head_learning_rate_multiplier}")
        if self.freeze_layers < 0:
            errors.append(f"freeze_layers: must be >= 0, got {self.freeze_layers}")
        return errors


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(Config):
    """Where and how the steps run."""

    strategy: Literal["auto", "default", "mirrored", "multi_worker", "tpu"] = option(
        "auto", "auto: tpu when runtime.tpu is set, multi_worker when TF_CONFIG lists several workers, "
        "mirrored with several GPUs or cpu_devices > 1, else default")
    tpu: str = option("", "TPU for TPUClusterResolver: 'local' on a TPU VM, or a name/grpc address")
    cpu_devices: int = option(1, "split the CPU into this many logical devices (testing distribution on one host)")
    mixed_precision: Literal["auto", "none", "bfloat16", "float16"] = option(
        "auto", "auto: bfloat16 on TPU, float16 with loss scaling on GPU, none on CPU")
    xla: bool = option(True, "compile the training step with XLA")
    last_block_at_read_positions: bool = option(
        True, "when every task reads a few positions (masked LM, next sentence, sentence tasks), run the last "
        "transformer block only there: the same losses and gradients, less compute (the export is the full model)")
    steps_per_loop: int = option(10, "steps per tf.function call (fewer host round trips; checkpoints fall between calls)")

    def check(self) -> list[str]:
        errors = []
        if self.cpu_devices < 1:
            errors.append(f"cpu_devices: must be >= 1, got {self.cpu_devices}")
        if self.steps_per_loop < 1:
            errors.append(f"steps_per_loop: must be >= 1, got {self.steps_per_loop}")
        if self.strategy == "tpu" and not self.tpu:
            errors.append("tpu: required with strategy=tpu ('local' on a TPU VM)")
        return errors


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """`bertkeras train` / `python -m trainer train`: multi-task pretraining and/or fine-tuning."""

    output_dir: str = option("", "checkpoints, TensorBoard logs, metrics.json, the exported model")
    on_existing: OnExisting = option(
        "resume", "when output_dir already holds a run: resume: continue it from its last checkpoint, refused "
        "unless this config matches its training_config.yaml (it may change only: "
        + ", ".join(f for f in CHANGEABLE_ON_RESUME if f not in ("on_existing", "output_dir"))
        + "; steps not below the checkpoint's step); a finished run is reported complete and left as it is. "
        "fresh: move the old run aside to <output_dir>.previous-<time> (local folders only) and start at step 0. "
        "override: continue its checkpoint under this config anyway; the old config is kept as "
        "training_config.step-<N>.yaml and the changed fields are recorded in metrics.json (config_overrides)")
    init_from: str = option("", "start from a model folder (model.keras, e.g. `bertkeras convert` output or a previous run's export)")
    encoder_dir: str = option("", "encoder assets for the serving export and the fingerprint check (default: <init_from>/encoder)")
    model: TransformerConfig = option(TransformerConfig(), "encoder sizes (ignored with init_from: the model's own)")
    tasks: tuple[TaskConfig, ...] = option(PRETRAINING_TASKS, "the tasks (heads, losses, schedules)")
    data: DataConfig = option(DataConfig(), "input")
    optimizer: OptimizerConfig = option(OptimizerConfig(), "optimizer and learning-rate schedule")
    runtime: RuntimeConfig = option(RuntimeConfig(), "strategy, precision, compilation")
    seed: int = option(0, "seed of weight initialisation and dropout (the input order follows data.seed)")
    steps: int = option(1000, "training steps (global batches); ignored when epochs is set")
    epochs: float = option(0.0, "passes over the training records, when that is what you mean (0: use steps): "
                                "steps = ceil(epochs x records / global_batch_size), the records counted from "
                                "the sources' manifests (or read); with several sources, all their records")
    checkpoint_every: int = option(500, "steps between checkpoints (rounded up to a multiple of steps_per_loop)")
    keep_checkpoints: int = option(3, "checkpoints kept")
    log_every: int = option(50, "steps between progress lines and TensorBoard scalars")
    eval_batches: int = option(0, "evaluation batches at the end (0: one pass over data.eval)")
    export: bool = option(True, "write model.keras and the serving SavedModel at the end")
    max_seq_length: int = option(0, "serving export: tokens per text (0: the training records' length)")

    def check(self) -> list[str]:
        errors = []
        if not self.output_dir:
            errors.append("output_dir: required")
        elif self.on_existing == "fresh" and "://" in self.output_dir:  # checked by every worker, before any step
            errors.append(f"on_existing: fresh moves an old run aside, which {self.output_dir} (an object store) "
                          f"cannot do in one step; give another output_dir, or move the old run yourself")
        if self.steps < 1:
            errors.append(f"steps: must be >= 1, got {self.steps}")
        if self.epochs < 0:
            errors.append(f"epochs: must be >= 0, got {self.epochs}")
        if self.epochs and self.data.synthetic:
            errors.append("epochs: synthetic data has no records to count; give steps")
        if not self.tasks:
            errors.append("tasks: at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            errors.append(f"tasks: duplicate names in {names}")
        from trainer.tasks import REGISTRY  # noqa: PLC0415 - the task classes say which kinds are unique

        for kind, cls in REGISTRY.items():
            if cls.at_most_one and sum(t.kind == kind for t in self.tasks) > 1:
                errors.append(f"tasks: at most one {kind} task")
        if self.checkpoint_every < 1 or self.log_every < 1:
            errors.append("checkpoint_every/log_every: must be >= 1")
        for i, task in enumerate(self.tasks):
            errors.extend(f"tasks[{i}].{e}" for e in task.check())
            errors.extend(f"tasks[{i}].weight.{e}" for e in task.weight.check())
        return errors


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(Config):
    """`bertkeras evaluate`: per-task metrics of a trained model on records."""

    model_dir: str = option("", "a training run's export folder (model.keras, training_config.yaml)")
    data: tuple[str, ...] = option((), "record folders or globs (default: the run's data.eval)")
    batch_size: int = option(32, "examples per batch")
    max_batches: int = option(0, "stop after this many batches (0: one full pass)")
    output: str = option("", "write the metrics JSON here (default: print only)")
    baselines: bool = option(True, "also fit each task's non-neural baseline (sentence: TF-IDF + linear softmax; token: per-word lookup) on training records and score it on the same data (baseline_* metrics)")
    baseline_train: tuple[str, ...] = option((), "training records for the baselines (default: the run's data.train)")
    baseline_max_examples: int = option(50_000, "examples of the training records the baselines are fit on at most")

    def check(self) -> list[str]:
        errors = [] if self.model_dir else ["model_dir: required"]
        if self.batch_size < 1:
            errors.append(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.baseline_max_examples < 1:
            errors.append(f"baseline_max_examples: must be >= 1, got {self.baseline_max_examples}")
        return errors
