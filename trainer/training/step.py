"""The per-replica training step: forward and backward (one XLA program), one all-reduce, clip, apply."""

from __future__ import annotations

import tensorflow as tf

from trainer.tasks.config import schedule_value
from trainer.training import data as data_lib
from trainer.training.config import TrainConfig
from trainer.training.data import Layout


def make_step(model, optimizer, config: TrainConfig, layout: Layout, policy: str, compile_update: bool = False):
    """The per-replica step: forward/backward (XLA when configured), one all-reduce, clip, apply.

    With ``compile_update`` the clipped update is one XLA program, while the global norm stays a TensorFlow op:
    XLA's CPU reductions are slow (the norm of BERT-mini's 11M gradients took 34 ms compiled, ~5 ms not) and its
    fused elementwise update is fast (21 ms against 52 ms op by op)."""
    tasks = layout.tasks
    clip = config.optimizer.clip_norm
    scaled = policy == "mixed_float16"
    variables = model.trainable_variables

    def forward_backward(batch, global_sums, step):
        with tf.GradientTape() as tape:
            outputs = model(data_lib.model_inputs(batch, layout), training=True)
            losses = {t.name: t.loss(outputs[t.name], batch, global_sums[t.name]) for t in tasks}
            total = tf.add_n([schedule_value(t.config.weight, step) * losses[t.name] for t in tasks])
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
        local = {t.name: t.weight_sum(batch) for t in tasks}
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
