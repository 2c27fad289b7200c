"""The training loop: one custom loop for every strategy (CPU, MirroredStrategy, MultiWorkerMirroredStrategy,
TPUStrategy). Keras ``fit`` is not used: it fails under MultiWorkerMirroredStrategy with Keras 3
(keras-team/keras#20585); ``strategy.run`` inside a ``tf.function`` that runs ``steps_per_loop`` steps per call
is portable.

Per step and replica: forward + backward (XLA-compiled), then the gradients are all-reduced once, clipped to a
global norm (the same on every replica, as in Google's BERT) and applied (:mod:`trainer.training.step`).
Checkpoints (model, optimizer, step) are written every ``checkpoint_every`` steps and on SIGTERM; the input
position is the step times the global batch (the input order is a function of the seed), so a resumed run
continues with unseen data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

import keras
import tensorflow as tf

from trainer import features, fileio
from trainer.tasks.config import schedule_value_py
from trainer.training import data as data_lib
from trainer.training.config import TrainConfig, TrainingError
from trainer.training.metrics import evaluate
from trainer.training.optimizer import freeze_bottom, head_variables, make_optimizer
from trainer.training.prepare import (
    Encoder, Inputs, backbone_for, build_training_model, encoder_of, load_base_model, run_inputs, training_inputs,
)
from trainer.training.runs import ExistingRun, existing_run, keep_overridden_config, move_aside
from trainer.training.step import make_step
from trainer.training.strategy import any_worker, is_chief, make_strategy, precision_policy, strategy_kind

log = logging.getLogger("bertkeras.train")


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between calls (then it checkpoints and stops)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass
class _Run:
    """Everything the loop needs, set up before the first step."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    kind: str
    chief: bool
    policy: str
    encoder: Encoder
    inputs: Inputs
    eval_inputs: Inputs | None
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    manager: tf.train.CheckpointManager
    start_step: int
    init_report: dict
    frozen: tuple = ()  # variables optimizer.freeze_layers keeps as loaded: trainable again when the run ends


def train(config: TrainConfig, backbone: keras.Model | None = None,
          in_memory: Mapping[str, data_lib.Source] = MappingProxyType({}), progress: Callable[[dict], None] | None = None,
          ) -> dict:
    """Runs (or resumes) a training run; -> the final metrics (also written to ``metrics.json``).

    ``backbone``: any Keras model honouring the backbone contract (:mod:`trainer.model.backbone`) to train
    instead of ``config.model`` / ``config.init_from``'s. ``in_memory``: sources held in memory
    (:func:`trainer.training.data.memory_source`) by the names ``config.data.train`` / ``eval`` give them.
    ``progress``: called with each progress record (every ``log_every`` steps). A run already in
    ``output_dir`` is resumed, refused, moved aside or overridden as ``config.on_existing`` says
    (:func:`trainer.training.runs.existing_run`)."""
    return fit(config, backbone, in_memory, progress)[0]


def fit(config: TrainConfig, backbone: keras.Model | None = None,
        in_memory: Mapping[str, data_lib.Source] = MappingProxyType({}),
        progress: Callable[[dict, keras.Model], bool | None] | None = None,
        attention_mask: Callable | None = None, base: keras.Model | None = None) -> tuple[dict, keras.Model | None]:
    """:func:`train`, also returning the trained model (None when the run was already complete).
    ``progress(record, model)``: called every ``log_every`` steps; a true answer stops the run there (it is
    checkpointed, evaluated and exported as at its end; ``stopped_early`` says so). ``attention_mask``: a
    function of a batch (``token_ids``, ``padding_mask``, ``segment_ids``, ...) giving the explicit [batch,
    query, key] mask training and evaluation apply with the padding mask (the export serves with the padding
    mask only). ``base``: a model whose weights (heads included) start the run where paths and shapes agree,
    as ``init_from``'s."""
    config = steps_from_epochs(config.validate(), in_memory)
    existing = existing_run(config)
    if existing.action == "complete":
        log.warning("%s: the run is already complete (step %d of %d): nothing trained, its metrics.json and export "
                    "are left as they are. Raise steps to train longer, run `export` to export it again, or set "
                    "on_existing=fresh to start a new run", config.output_dir, existing.checkpoint_step, config.steps)
        return {**existing.previous_metrics, "already_complete": True}, None
    run = _set_up(config, backbone, existing, in_memory, attention_mask, base)
    try:
        return _finish(run, existing, progress)
    finally:
        for variable in run.frozen:  # the caller's model is left as trainable as it came
            variable.trainable = True


def _finish(run: _Run, existing: ExistingRun, progress) -> tuple[dict, keras.Model | None]:
    """The steps, then on the chief the evaluation, the export and metrics.json."""
    config = run.config
    result = _train_steps(run, progress)
    earlier = (existing.previous_metrics or {}).get("history", [])
    result["history"] = [h for h in earlier if h.get("step", 0) <= run.start_step] + result["history"]
    if result["preempted"]:
        log.warning("stopped by SIGTERM at step %d; checkpoint written, rerun to resume", result["step"])
        return result, run.model
    if run.chief:
        if run.eval_inputs is not None and run.kind != "tpu":
            dataset = data_lib.make_dataset(run.eval_inputs.sources, run.eval_inputs.layout, config.data,
                                            config.data.global_batch_size, training=False)
            result["eval"] = evaluate(run.model, dataset, run.eval_inputs.layout, config.eval_batches)
        if config.export:
            from trainer.training.export import export_model  # noqa: PLC0415 - TensorFlow Text loads only here

            result["export"] = export_model(run.model, config, run.inputs.layout, run.encoder.folder)
        fileio.atomic_write_text(fileio.join(config.output_dir, features.METRICS_FILE), json.dumps(result, indent=2))
    return result, run.model


def steps_from_epochs(config: TrainConfig, in_memory: Mapping[str, data_lib.Source] = MappingProxyType({})) -> TrainConfig:
    """``config`` with ``steps`` set from ``epochs`` over the training records (unchanged when epochs is 0)."""
    if not config.epochs:
        return config
    records = sum(data_lib.count_records(in_memory[spec] if spec in in_memory else data_lib.inspect_source(spec))
                  for spec in config.data.train)
    steps = max(1, math.ceil(config.epochs * records / config.data.global_batch_size))
    log.info("epochs %g over %d training records at %d per batch: %d steps", config.epochs, records,
             config.data.global_batch_size, steps)
    return dataclasses.replace(config, steps=steps)


def _set_up(config: TrainConfig, backbone: keras.Model | None, existing: ExistingRun,
            in_memory: Mapping[str, data_lib.Source], attention_mask: Callable | None = None,
            base: keras.Model | None = None) -> _Run:
    """Strategy and precision, the old run moved aside or its config kept (``on_existing``; the chief), the
    encoder, the base model, every source checked (evaluation sources too, before the first step), the model
    and optimizer, and the restored checkpoint if there is one."""
    strategy = make_strategy(config.runtime)
    chief = is_chief(strategy)
    existing_report = {}
    if chief and existing.action == "fresh":
        existing_report["moved_aside"] = move_aside(config.output_dir)
    if chief and existing.action == "override":
        earlier = (existing.previous_metrics or {}).get("config_overrides", [])
        existing_report["config_overrides"] = [*earlier, keep_overridden_config(config.output_dir, existing)]
    elif existing.previous_metrics and existing.previous_metrics.get("config_overrides"):
        existing_report["config_overrides"] = existing.previous_metrics["config_overrides"]
    kind = strategy_kind(strategy)
    policy = precision_policy(config.runtime, kind)
    keras.mixed_precision.set_global_policy(policy)
    encoder = encoder_of(config.encoder_dir, config.init_from)
    if base is None and config.init_from:
        base = load_base_model(config.init_from)
    if config.optimizer.freeze_layers and base is None and backbone is None:
        raise TrainingError(f"optimizer.freeze_layers: {config.optimizer.freeze_layers}, but the run starts from "
                            f"random weights (no init_from, no model given): frozen layers would stay random. Give "
                            f"init_from, or set optimizer.freeze_layers=0")
    replicas = strategy.num_replicas_in_sync
    if config.data.global_batch_size % replicas:
        raise TrainingError(f"data.global_batch_size: {config.data.global_batch_size} is not divisible by the "
                            f"{replicas} replicas")
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        backbone = backbone_for(config, base, backbone)
        inputs = training_inputs(config, backbone, encoder, in_memory=in_memory)
        eval_inputs = None
        if config.data.eval:
            eval_inputs = run_inputs(config, config.data.eval, backbone, encoder, "data.eval", tasks=inputs.tasks,
                                     in_memory=in_memory)
        if attention_mask is not None:
            inputs = dataclasses.replace(inputs, layout=dataclasses.replace(inputs.layout, attention_mask=attention_mask))
            if eval_inputs is not None:
                eval_inputs = dataclasses.replace(
                    eval_inputs, layout=dataclasses.replace(eval_inputs.layout, attention_mask=attention_mask))
        model, init_report = build_training_model(config, inputs.tasks, backbone, base)
        init_report = {**existing_report, **init_report}
        frozen = freeze_bottom(model.weights, config.optimizer.freeze_layers)
        if frozen:
            init_report["frozen_weights"] = len(frozen)
        optimizer = make_optimizer(config, policy, model.trainable_variables, head_variables(model))
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint_dir = fileio.join(config.output_dir, features.CHECKPOINT_DIR)
    if not chief:  # every worker writes (collectives); only the chief's copy is kept
        checkpoint_dir = tempfile.mkdtemp(prefix="bertkeras-worker-ckpt-")
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=config.keep_checkpoints,
                                         step_counter=optimizer.iterations)
    restored = manager.restore_or_initialize() if manager.latest_checkpoint else None
    if restored:
        log.info("resumed from %s at step %d", restored, int(optimizer.iterations.numpy()))
        if int(optimizer.iterations.numpy()) >= config.steps:
            log.info("the checkpoint is at the last step: finishing the run (evaluation, export, metrics.json)")
    if chief:
        fileio.makedirs(config.output_dir)
        config.save(fileio.join(config.output_dir, features.TRAINING_CONFIG_FILE))
    return _Run(config, strategy, kind, chief, policy, encoder, inputs, eval_inputs, model, optimizer, manager,
                int(optimizer.iterations.numpy()), init_report, tuple(frozen))


def _distributed_batches(run: _Run):
    config, layout, global_batch = run.config, run.inputs.layout, run.config.data.global_batch_size
    vocabulary = getattr(run.model.backbone, "vocabulary_size", None) or 2

    def dataset_fn(ctx: tf.distribute.InputContext):
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        skip = run.start_step * global_batch
        if not run.inputs.sources:
            return data_lib.synthetic_dataset(layout, vocabulary, config.data.seed, per_replica, skip,
                                              ctx.num_input_pipelines, ctx.input_pipeline_id)
        return data_lib.make_dataset(run.inputs.sources, layout, config.data, per_replica, training=True, skip=skip,
                                     num_pipelines=ctx.num_input_pipelines, pipeline_id=ctx.input_pipeline_id)

    return iter(run.strategy.distribute_datasets_from_function(dataset_fn))


def _train_steps(run: _Run, progress: Callable[[dict], None] | None = None) -> dict:
    """The loop proper: calls of ``steps_per_loop`` steps, progress lines, checkpoints, SIGTERM."""
    config, strategy, tasks = run.config, run.strategy, run.inputs.tasks
    iterator = _distributed_batches(run)
    # One replica, no loss scaling: the update can be one XLA program (cross-replica updates need merge_call).
    compile_update = config.runtime.xla and run.kind == "default" and run.policy != "mixed_float16"
    step_fn = make_step(run.model, run.optimizer, config, run.inputs.layout, run.policy, compile_update)

    @tf.function
    def train_loop(iterator, steps):
        totals = {t.name: tf.constant(0.0) for t in tasks}
        totals["loss"] = tf.constant(0.0)
        for _ in tf.range(steps):
            losses = strategy.run(step_fn, args=(next(iterator),))
            totals = {name: total + strategy.reduce(tf.distribute.ReduceOp.SUM, losses[name], axis=None)
                      for name, total in totals.items()}
        return {k: v / tf.cast(steps, tf.float32) for k, v in totals.items()}

    writer = tf.summary.create_file_writer(fileio.join(config.output_dir, "logs")) if run.chief else None
    global_batch = config.data.global_batch_size
    history, step, preempted, stopped_early = [], run.start_step, False, False
    next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
    next_log = (step // config.log_every + 1) * config.log_every
    started, last_time, last_step = time.time(), time.time(), step
    with _Preemption() as preemption:
        while step < config.steps:
            n = min(config.runtime.steps_per_loop, config.steps - step)
            losses = {k: float(v) for k, v in train_loop(iterator, tf.constant(n)).items()}
            step += n
            if step >= next_log or step == config.steps:
                now = time.time()
                record = _progress_record(run, step, losses, (step - last_step) * global_batch / max(now - last_time, 1e-9))
                history.append(record)
                if run.chief:
                    _report_progress(writer, record, config.steps)
                if progress is not None and progress(record, run.model):
                    stopped_early = True
                last_time, last_step = now, step
                next_log = (step // config.log_every + 1) * config.log_every
            stop = preemption.requested if run.kind != "multi_worker" else any_worker(strategy, preemption.requested)
            if step >= next_checkpoint or step == config.steps or stop or stopped_early:
                run.manager.save(checkpoint_number=step)
                next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
            if stop and step < config.steps:
                preempted = True
                break
            if stopped_early:
                log.info("stopped early at step %d (asked by a callback)", step)
                break
    if writer is not None:
        writer.flush()
    if not run.chief:
        shutil.rmtree(run.manager.directory, ignore_errors=True)
    return {
        "step": step, "steps": config.steps, "resumed_from_step": run.start_step, "preempted": preempted,
        **({"stopped_early": True} if stopped_early else {}),
        "strategy": run.kind, "replicas": strategy.num_replicas_in_sync, "precision": run.policy,
        "global_batch_size": global_batch,
        "examples_per_second": round((step - run.start_step) * global_batch / max(time.time() - started, 1e-9), 2),
        "history": history, **run.init_report,
    }


def _progress_record(run: _Run, step: int, losses: dict, rate: float) -> dict:
    weights = {t.name: schedule_value_py(t.config.weight, step) for t in run.inputs.tasks}
    return {"step": step, **{f"loss/{k}": round(v, 5) for k, v in losses.items()},
            **{f"weight/{k}": round(v, 4) for k, v in weights.items()},
            "learning_rate": float(keras.ops.convert_to_numpy(run.optimizer.learning_rate)),
            "examples_per_second": round(rate, 2)}


def _report_progress(writer, record: dict, total: int) -> None:
    losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss/"))
    print(f"[train] step {record['step']}/{total} ({100 * record['step'] / total:.0f}%) {losses} "
          f"lr={record['learning_rate']:.3g} {record['examples_per_second']:.1f} ex/s", file=sys.stderr, flush=True)
    with writer.as_default(step=record["step"]):
        for key, value in record.items():
            if key != "step":
                tf.summary.scalar(key, value)
