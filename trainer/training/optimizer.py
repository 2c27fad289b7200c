"""BERT's optimizer recipe: AdamW (or LAMB for large batches) with linear warm-up then linear decay, no weight
decay on biases and layer norms, optional layer-wise learning-rate decay and frozen bottom layers; gradients
arrive all-reduced (the loop reduces once, then clips); an optional higher rate for the task heads."""

from __future__ import annotations

import re
from typing import Iterable

import keras

from trainer.training.config import TrainConfig, TrainingError

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


LAYER = re.compile(r"(?:^|/)layer_(\d+)/")
EMBEDDINGS = re.compile(r"(?:^|/)(token_embedding|position_embedding|segment_embedding|embeddings_layer_norm)/")


def layer_scales(paths: Iterable[str], decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay: {variable path: factor} for the encoder's variables. The top layer
    (``layer_<L-1>``) learns at the full rate, each layer below at ``decay`` times the one above, the embeddings
    at ``decay ** L``; the heads and the pooler at the full rate (absent from the map; ``make_optimizer`` adds the
    heads' own multiplier). Empty when the backbone
    has no ``layer_<i>`` variables (a backbone of one's own) or ``decay`` is 1."""
    paths = list(paths)
    depths = [int(m.group(1)) for p in paths if (m := LAYER.search(p))]
    if decay == 1.0 or not depths:
        return {}
    layers = max(depths) + 1
    scales = {}
    for path in paths:
        if m := LAYER.search(path):
            scales[path] = decay ** (layers - 1 - int(m.group(1)))
        elif EMBEDDINGS.search(path):
            scales[path] = decay ** layers
    return scales


def freeze_bottom(variables: Iterable, layers: int) -> list:
    """Marks the embeddings and the encoder layers below ``layers`` not trainable (they keep their loaded
    values, and the step computes no gradient for them); -> the frozen variables (the loop marks them trainable
    again when the run ends). Refused when the backbone has fewer ``layer_<i>`` variables than ``layers`` or no
    embedding variables by our names (gradients would still flow through the frozen layers)."""
    variables = list(variables)
    if not layers:
        return []
    depths = {int(m.group(1)) for v in variables if (m := LAYER.search(v.path))}
    embeddings = [v for v in variables if EMBEDDINGS.search(v.path)]
    if len(depths) < layers or not embeddings:
        found = f"{len(depths)} encoder layers" if depths else "no layer_<i> variables"
        raise TrainingError(f"optimizer.freeze_layers: {layers}, but the backbone has {found}"
                            + ("" if embeddings else " and no token_embedding / position_embedding variables")
                            + " (freeze fewer, or train everything with 0)")
    frozen = embeddings + [v for v in variables if (m := LAYER.search(v.path)) and int(m.group(1)) < layers]
    for v in frozen:
        v.trainable = False
    return frozen


def head_variables(model) -> list:
    """The model's trainable variables outside its backbone: the task heads (new, or copied from ``init_from`` or,
    for a sentence head's pooler, from the backbone's pooler)."""
    backbone = {id(v) for v in model.backbone.weights}
    return [v for v in model.trainable_variables if id(v) not in backbone]


def _no_reduce(optimizer_class):
    """The Keras optimizer, told that gradients arrive already all-reduced (we reduce once, then clip), with a
    learning-rate factor per variable (``lr_scales``, by variable path: layer-wise decay, the heads' multiplier)."""

    class PreReduced(optimizer_class):
        lr_scales: dict[str, float] = {}

        def build(self, variables):
            super().build(variables)
            # by the optimizer's variable index: the backend's update step sees the backend variables, not paths
            self._lr_factors = [self.lr_scales.get(v.path) for v in variables]
            self._decays = [self.weight_decay is not None and super(PreReduced, self)._use_weight_decay(v)
                            for v in variables]

        def _all_reduce_sum_gradients(self, grads_and_vars):
            return grads_and_vars

        def _factor(self, variable):
            return self._lr_factors[self._get_variable_index(variable)] if self.lr_scales else None

        def _use_weight_decay(self, variable):
            # a variable with its own rate is decayed in update_step, at that rate (decoupled decay is lr x wd)
            return self._factor(variable) is None and super()._use_weight_decay(variable)

        def update_step(self, gradient, variable, learning_rate):
            factor = self._factor(variable)
            if factor is None:
                return super().update_step(gradient, variable, learning_rate)
            learning_rate = learning_rate * factor
            if self._decays[self._get_variable_index(variable)]:
                rate = keras.ops.cast(learning_rate, variable.dtype) * keras.ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * rate)
            return super().update_step(gradient, variable, learning_rate)

    PreReduced.__name__ = optimizer_class.__name__
    return PreReduced


def make_optimizer(config: TrainConfig, policy: str, variables: Iterable = (), heads: Iterable = ()):
    """The configured optimizer for ``variables`` (the model's trainable ones: their paths place the layer-wise
    decay); ``heads`` (those outside the backbone, :func:`head_variables`) learn at
    ``head_learning_rate_multiplier`` times the rate, which is refused without them (it would do nothing)."""
    opt = config.optimizer
    schedule = WarmupLinearDecay(opt.learning_rate, opt.warmup_steps, config.steps, opt.end_learning_rate)
    cls = _no_reduce(keras.optimizers.Lamb if opt.name == "lamb" else keras.optimizers.AdamW)
    kwargs = {"learning_rate": schedule, "beta_1": opt.beta_1, "beta_2": opt.beta_2, "epsilon": opt.epsilon}
    optimizer = cls(weight_decay=opt.weight_decay, **kwargs) if opt.name == "adamw" else cls(**kwargs)
    optimizer.lr_scales = layer_scales((v.path for v in variables), opt.layer_decay)
    if opt.head_learning_rate_multiplier != 1.0:
        heads = list(heads)
        if not heads:
            raise TrainingError(f"optimizer.head_learning_rate_multiplier: {opt.head_learning_rate_multiplier}, but "
                                "no head variables were given to the optimizer (pass head_variables(model))")
        optimizer.lr_scales.update({v.path: opt.head_learning_rate_multiplier for v in heads})
    if opt.name == "adamw" and opt.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
