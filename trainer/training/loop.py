"""The training loop: one custom loop for every strategy (CPU, MirroredStrategy, MultiWorkerMirroredStrategy,
TPUStrategy). Keras ``fit`` is not used: it fails under MultiWorkerMirroredStrategy with Keras 3
(keras-team/keras#20585); ``strategy.run`` inside a ``tf.function`` that runs ``steps_per_loop`` steps per call
is portable.

Per step and replica: forward + backward (XLA-compiled), then the gradients are all-reduced once, clipped to a
global norm (the same on every replica, as in Google's BERT) and applied. Checkpoints (model, optimizer, step)
are written every ``checkpoint_every`` steps and on SIGTERM; the input position is the step times the global
batch (the input order is a function of the seed), so a resumed run continues with unseen data.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras
import tensorflow as tf

from trainer import features, fileio
from trainer.model.builder import build_model, config_from_model, transfer_weights
from trainer.model.saving import MODEL_FILE, load_model
from trainer.training import data as data_lib
from trainer.training import tasks as tasks_lib
from trainer.training.config import RuntimeConfig, TrainConfig, TrainingError
from trainer.training.metrics import evaluate

log = logging.getLogger("bertkeras.train")
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"
TRAINING_CONFIG_FILE = "training_config.yaml"
NO_DECAY = ["bias", "gamma", "beta", "embeddings_layer_norm", "layer_norm", "_norm"]


# --- strategy ------------------------------------------------------------------------------------------------
def _cluster_workers() -> int:
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec().as_dict()
    return len(spec.get("worker", [])) + len(spec.get("chief", []))


def make_strategy(runtime: RuntimeConfig) -> tf.distribute.Strategy:
    """The strategy the runtime config asks for (``auto``: TPU > several workers > several devices > default)."""
    kind = runtime.strategy
    if runtime.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * runtime.cpu_devices)
        except RuntimeError as err:
            raise TrainingError(f"runtime.cpu_devices: TensorFlow is already initialised in this process ({err})") from None
    gpus = tf.config.list_physical_devices("GPU")  # physical: listing logical devices would start the runtime
    if kind == "auto":
        if runtime.tpu:
            kind = "tpu"
        elif _cluster_workers() > 1:
            kind = "multi_worker"
        elif len(gpus) > 1 or runtime.cpu_devices > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def strategy_kind(strategy) -> str:
    name = type(strategy).__name__
    return {"TPUStrategy": "tpu", "MultiWorkerMirroredStrategy": "multi_worker", "MirroredStrategy": "mirrored",
            "CollectiveAllReduceStrategy": "multi_worker"}.get(name, "default")


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or strategy_kind(strategy) != "multi_worker":
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def precision_policy(runtime: RuntimeConfig, kind: str) -> str:
    if runtime.mixed_precision == "auto":
        if kind == "tpu":
            return "mixed_bfloat16"
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[runtime.mixed_precision]


# --- model and optimizer -------------------------------------------------------------------------------------
def _no_reduce(optimizer_class):
    """The Keras optimizer, told that gradients arrive already all-reduced (we reduce once, then clip)."""

    class PreReduced(optimizer_class):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return grads_and_vars

    PreReduced.__name__ = optimizer_class.__name__
    return PreReduced


def make_optimizer(config: TrainConfig, policy: str):
    opt = config.optimizer
    schedule = tasks_lib.WarmupLinearDecay(opt.learning_rate, opt.warmup_steps, config.steps, opt.end_learning_rate)
    cls = _no_reduce(keras.optimizers.Lamb if opt.name == "lamb" else keras.optimizers.AdamW)
    kwargs = {"learning_rate": schedule, "beta_1": opt.beta_1, "beta_2": opt.beta_2, "epsilon": opt.epsilon}
    optimizer = cls(weight_decay=opt.weight_decay, **kwargs) if opt.name == "adamw" else cls(**kwargs)
    if opt.name == "adamw" and opt.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def resolve_classes(config: TrainConfig, label_folders: list[str]) -> tuple[dict[str, int], dict[str, list[str]]]:
    num_classes, names = {}, {}
    for task in config.tasks:
        if task.kind == "next_sentence":
            num_classes[task.name] = 2
        if task.kind not in ("sentence", "token"):
            continue
        found = tasks_lib.label_names(task, label_folders)
        if found:
            names[task.name] = found
        n = task.num_classes or (len(found) if found else 0)
        if not n:
            raise TrainingError(f"tasks: {task.name}: num_classes is 0 and no {task.name}{features.LABELS_FILE_SUFFIX} "
                                f"beside the records in {label_folders}")
        if found and task.num_classes and task.num_classes < len(found):
            raise TrainingError(f"tasks: {task.name}: num_classes {task.num_classes} < {len(found)} labels in "
                                f"{task.name}{features.LABELS_FILE_SUFFIX}")
        num_classes[task.name] = n
    return num_classes, names


def load_base_model(init_from: str) -> keras.Model:
    path = init_from if init_from.endswith(".keras") else fileio.join(init_from, MODEL_FILE)
    if not fileio.exists(path):
        raise TrainingError(f"init_from: {path} not found (expected a folder with {MODEL_FILE})")
    return load_model(path)


def build_training_model(config: TrainConfig, num_classes: dict[str, int], base: keras.Model | None):
    model_config = config_from_model(base) if base is not None else config.model
    model = build_model(model_config, tasks_lib.head_configs(config.tasks, num_classes),
                        last_block_at_read_positions=config.runtime.last_block_at_read_positions)
    report = {}
    if base is not None:
        copied, fresh = transfer_weights(base, model)
        report = {"initialised_from": config.init_from, "copied_layers": len(copied), "new_layers": fresh}
    return model, model_config, report


# --- the loop ------------------------------------------------------------------------------------------------
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


def encoder_of(encoder_dir: str, init_from: str = "") -> tuple[str | None, str | None]:
    """(encoder folder, fingerprint) of the model: ``encoder_dir``, else ``<init_from>/encoder``, else none."""
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    folder = encoder_dir or (fileio.join(init_from, "encoder") if init_from else "")
    if folder and fileio.exists(fileio.join(folder, "encoder.json")):
        return folder, load_encoder(folder).fingerprint
    if encoder_dir:
        raise TrainingError(f"encoder_dir: {encoder_dir} has no encoder.json")
    return None, None


def dynamic_masking(config: TrainConfig, encoder_dir: str | None):
    """The masking spec from the model's encoder (mask and special token ids), when dynamic masking is on."""
    if not config.data.dynamic_masking:
        return None
    if encoder_dir is None:
        raise TrainingError("data.dynamic_masking: needs the encoder (encoder_dir or init_from/encoder) for the mask token")
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    encoder = load_encoder(encoder_dir)
    special = encoder.special
    unselectable = tuple(special.id(name) for name in ("pad", "start", "end", "delimiter") if getattr(special, name))
    return data_lib.DynamicMasking(encoder.vocab_size, special.id("mask"), tuple(sorted(set(unselectable))),
                                   config.data.masked_lm_prob)


def prepare_sources(config: TrainConfig, specs, model_config, fingerprint, role: str, encoder_dir: str | None = None):
    sources = [data_lib.inspect_source(s) for s in specs]
    layout = data_lib.check_sources(sources, config.tasks, model_config.max_positions, model_config.vocab_size,
                                    fingerprint, config.data.verify_records, role=role,
                                    masking=dynamic_masking(config, encoder_dir),
                                    dynamic_predictions=config.data.max_predictions)
    return sources, layout


def train(config: TrainConfig) -> dict:
    """Runs (or resumes) a training run; -> the final metrics (also written to ``metrics.json``)."""
    config.validate()
    strategy = make_strategy(config.runtime)
    kind = strategy_kind(strategy)
    chief = is_chief(strategy)
    policy = precision_policy(config.runtime, kind)
    keras.mixed_precision.set_global_policy(policy)
    encoder_dir, fingerprint = encoder_of(config.encoder_dir, config.init_from)
    base = load_base_model(config.init_from) if config.init_from else None
    model_config = config_from_model(base) if base is not None else config.model

    if config.data.synthetic:
        sources = []
        predictions = config.data.synthetic_predictions if any(t.kind == "masked_lm" for t in config.tasks) else 0
        layout = data_lib.Layout(config.data.synthetic_seq_length, predictions, config.tasks)
        label_folders = []
    else:
        sources, layout = prepare_sources(config, config.data.train, model_config, fingerprint, "data.train", encoder_dir)
        label_folders = [s.folder for s in sources]
    num_classes, label_names = resolve_classes(config, label_folders)
    replicas = strategy.num_replicas_in_sync
    if config.data.global_batch_size % replicas:
        raise TrainingError(f"data.global_batch_size: {config.data.global_batch_size} is not divisible by the "
                            f"{replicas} replicas")

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model, model_config, init_report = build_training_model(config, num_classes, base)
        optimizer = make_optimizer(config, policy)
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint_dir = fileio.join(config.output_dir, CHECKPOINT_DIR)
    if not chief:  # every worker writes (collectives); only the chief's copy is kept
        checkpoint_dir = tempfile.mkdtemp(prefix="bertkeras-worker-ckpt-")
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=config.keep_checkpoints,
                                         step_counter=optimizer.iterations)
    restored = manager.restore_or_initialize() if manager.latest_checkpoint else None
    if restored:
        log.info("resumed from %s at step %d", restored, int(optimizer.iterations.numpy()))
    start_step = int(optimizer.iterations.numpy())
    if chief:
        fileio.makedirs(config.output_dir)
        config.save(fileio.join(config.output_dir, TRAINING_CONFIG_FILE))

    global_batch = config.data.global_batch_size

    def dataset_fn(ctx: tf.distribute.InputContext):
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        skip = start_step * global_batch
        if config.data.synthetic:
            return data_lib.synthetic_dataset(layout, model_config.vocab_size, num_classes, config.data.seed, per_replica,
                                              skip, ctx.num_input_pipelines, ctx.input_pipeline_id)
        return data_lib.make_dataset(sources, layout, config.data, per_replica, training=True, skip=skip,
                                     num_pipelines=ctx.num_input_pipelines, pipeline_id=ctx.input_pipeline_id)

    dist_dataset = strategy.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dist_dataset)
    # One replica, no loss scaling: the update can be one XLA program (cross-replica updates need merge_call).
    compile_update = config.runtime.xla and kind == "default" and policy != "mixed_float16"
    step_fn = _make_step(model, optimizer, config, layout, policy, compile_update)

    @tf.function
    def train_loop(iterator, steps):
        totals = {t.name: tf.constant(0.0) for t in config.tasks}
        totals["loss"] = tf.constant(0.0)
        for _ in tf.range(steps):
            losses = strategy.run(step_fn, args=(next(iterator),))
            totals = {name: total + strategy.reduce(tf.distribute.ReduceOp.SUM, losses[name], axis=None)
                      for name, total in totals.items()}
        return {k: v / tf.cast(steps, tf.float32) for k, v in totals.items()}

    writer = tf.summary.create_file_writer(fileio.join(config.output_dir, "logs")) if chief else None
    history = []
    step = start_step
    per_call = config.runtime.steps_per_loop
    next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
    next_log = (step // config.log_every + 1) * config.log_every
    started, last_time, last_step = time.time(), time.time(), step
    preempted = False
    with _Preemption() as preemption:
        while step < config.steps:
            n = min(per_call, config.steps - step)
            losses = {k: float(v) for k, v in train_loop(iterator, tf.constant(n)).items()}
            step += n
            if step >= next_log or step == config.steps:
                now = time.time()
                rate = (step - last_step) * global_batch / max(now - last_time, 1e-9)
                lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                weights = {t.name: tasks_lib.schedule_value_py(t.weight, step) for t in config.tasks}
                record = {"step": step, **{f"loss/{k}": round(v, 5) for k, v in losses.items()},
                          **{f"weight/{k}": round(v, 4) for k, v in weights.items()},
                          "learning_rate": lr, "examples_per_second": round(rate, 2)}
                history.append(record)
                if chief:
                    print(_progress_line(record, config.steps), file=sys.stderr, flush=True)
                    with writer.as_default(step=step):
                        for key, value in record.items():
                            if key != "step":
                                tf.summary.scalar(key, value)
                last_time, last_step = now, step
                next_log = (step // config.log_every + 1) * config.log_every
            stop = preemption.requested if kind != "multi_worker" else _any_worker(strategy, preemption.requested)
            if step >= next_checkpoint or step == config.steps or stop:
                manager.save(checkpoint_number=step)
                next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
            if stop and step < config.steps:
                preempted = True
                break
    if writer is not None:
        writer.flush()
    if not chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    result = {
        "step": step, "steps": config.steps, "resumed_from_step": start_step, "preempted": preempted,
        "strategy": kind, "replicas": replicas, "precision": policy, "global_batch_size": global_batch,
        "examples_per_second": round((step - start_step) * global_batch / max(time.time() - started, 1e-9), 2),
        "history": history, **init_report,
    }
    if preempted:
        log.warning("stopped by SIGTERM at step %d; checkpoint written, rerun to resume", step)
        return result
    if chief:
        if config.data.eval and kind != "tpu":
            eval_sources, eval_layout = prepare_sources(config, config.data.eval, model_config, fingerprint, "data.eval",
                                                        encoder_dir)
            dataset = data_lib.make_dataset(eval_sources, eval_layout, config.data, global_batch, training=False)
            result["eval"] = evaluate(model, dataset, eval_layout, label_names, num_classes, config.eval_batches)
        if config.export:
            from trainer.training.export import export_model  # noqa: PLC0415

            result["export"] = export_model(model, config, layout, encoder_dir, label_names, num_classes)
        fileio.atomic_write_text(fileio.join(config.output_dir, METRICS_FILE), json.dumps(result, indent=2))
    return result


def _any_worker(strategy, flag: bool) -> bool:
    """True when any worker's flag is set (workers must stop at the same step)."""
    value = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None).numpy() > 0)


def _progress_line(record: dict, total: int) -> str:
    losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss/"))
    return (f"[train] step {record['step']}/{total} ({100 * record['step'] / total:.0f}%) {losses} "
            f"lr={record['learning_rate']:.3g} {record['examples_per_second']:.1f} ex/s")


def _make_step(model, optimizer, config: TrainConfig, layout, policy: str, compile_update: bool = False):
    """The per-replica step: forward/backward (XLA when configured), one all-reduce, clip, apply.

    With ``compile_update`` the clipped update is one XLA program, while the global norm stays a TensorFlow op:
    XLA's CPU reductions are slow (the norm of BERT-mini's 11M gradients took 34 ms compiled, ~5 ms not) and its
    fused elementwise update is fast (21 ms against 52 ms op by op)."""
    tasks = config.tasks
    clip = config.optimizer.clip_norm
    scaled = policy == "mixed_float16"
    variables = model.trainable_variables

    def forward_backward(batch, global_sums, step):
        with tf.GradientTape() as tape:
            outputs = model(data_lib.model_inputs(batch, layout), training=True)
            losses = tasks_lib.task_losses(outputs, batch, tasks, global_sums)
            total = tf.add_n([tasks_lib.schedule_value(t.weight, step) * losses[t.name] for t in tasks])
            objective = optimizer.scale_loss(total) if scaled else total
        grads = tape.gradient(objective, variables)
        # Dense gradients: a gathered embedding's gradient is IndexedSlices with one row per token, and Keras's
        # Adam squares those rows before summing duplicates (wrong second moments); BERT's Adam is dense.
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return grads, {**losses, "loss": total}

    compiled = tf.function(forward_backward, jit_compile=config.runtime.xla)

    @tf.function(jit_compile=True)
    def scaled_update(grads, scale):
        optimizer.apply([g * scale for g in grads], variables)

    def clip_scale(grads):
        """tf.clip_by_global_norm's factor (NaN when the norm is not finite, as there)."""
        norm = tf.linalg.global_norm(grads)
        return clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)

    def step_fn(batch):
        ctx = tf.distribute.get_replica_context()
        local = tasks_lib.weight_sums(batch, tasks)
        global_sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
        grads, losses = compiled(batch, global_sums, tf.convert_to_tensor(optimizer.iterations))
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if compile_update:
            scaled_update(grads, clip_scale(grads) if clip else tf.constant(1.0))
            return losses
        if clip:
            if scaled:
                scale = tf.cast(optimizer.dynamic_scale, tf.float32)
                grads, _ = tf.clip_by_global_norm([g / scale for g in grads], clip)
                grads = [g * scale for g in grads]
            else:
                grads, _ = tf.clip_by_global_norm(grads, clip)
        optimizer.apply(grads, variables)
        return losses

    return step_fn
