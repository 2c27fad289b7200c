"""Where a run executes: the tf.distribute strategy, which worker is the chief, the precision policy."""

from __future__ import annotations

import tensorflow as tf

from trainer.training.config import RuntimeConfig, TrainingError


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


def any_worker(strategy, flag: bool) -> bool:
    """True when any worker's flag is set (workers must stop at the same step)."""
    value = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None).numpy() > 0)
