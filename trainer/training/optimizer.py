"""BERT's optimizer recipe: AdamW (or LAMB for large batches) with linear warm-up then linear decay, no weight
decay on biases and layer norms; gradients arrive all-reduced (the loop reduces once, then clips)."""

from __future__ import annotations

import keras

from trainer.training.config import TrainConfig

NO_DECAY = ["bias", "gamma", "beta", "embeddings_layer_norm", "layer_norm", "_norm"]


@keras.saving.register_keras_serializable(package="bertkeras")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """BERT's learning rate: linear warm-up from 0 to ``peak`` over ``warmup_steps``, then linear decay to
    ``end`` at ``total_steps``."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, end: float = 0.0):
        self.peak, self.warmup_steps, self.total_steps, self.end = peak, warmup_steps, total_steps, end

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * step / max(self.warmup_steps, 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        frac = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        decay = self.peak + (self.end - self.peak) * frac
        return keras.ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "end": self.end}


def _no_reduce(optimizer_class):
    """The Keras optimizer, told that gradients arrive already all-reduced (we reduce once, then clip)."""

    class PreReduced(optimizer_class):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return grads_and_vars

    PreReduced.__name__ = optimizer_class.__name__
    return PreReduced


def make_optimizer(config: TrainConfig, policy: str):
    opt = config.optimizer
    schedule = WarmupLinearDecay(opt.learning_rate, opt.warmup_steps, config.steps, opt.end_learning_rate)
    cls = _no_reduce(keras.optimizers.Lamb if opt.name == "lamb" else keras.optimizers.AdamW)
    kwargs = {"learning_rate": schedule, "beta_1": opt.beta_1, "beta_2": opt.beta_2, "epsilon": opt.epsilon}
    optimizer = cls(weight_decay=opt.weight_decay, **kwargs) if opt.name == "adamw" else cls(**kwargs)
    if opt.name == "adamw" and opt.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
