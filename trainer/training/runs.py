"""Operations on a finished (or interrupted) run: what a new ``train`` into its folder may do with it
(``on_existing``), evaluate an exported model, export from the last checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import tensorflow as tf

from trainer import features, fileio
from trainer.config import MISSING, ConfigError, load_mapping
from trainer.model.saving import require_complete
from trainer.tasks.base import BASELINE_PREFIX
from trainer.training import data as data_lib
from trainer.training.config import CHANGEABLE_ON_RESUME, EvaluateConfig, TrainConfig, TrainingError
from trainer.training.metrics import collect_examples, evaluate
from trainer.training.prepare import (
    backbone_for, build_training_model, encoder_of, load_base_model, run_inputs, training_inputs,
)


log = logging.getLogger("bertkeras.train")


@dataclasses.dataclass(frozen=True)
class ExistingRun:
    """What ``output_dir`` holds and what ``on_existing`` makes of it.

    action: ``new`` (nothing there), ``resume``, ``complete`` (finished at ``steps``: nothing to do), ``fresh``
    (move it aside first) or ``override`` (resume under a changed config, ``changes`` recorded)."""

    action: str
    checkpoint_step: int = 0
    previous_metrics: dict | None = None
    changes: tuple[str, ...] = ()


def existing_run(config: TrainConfig) -> ExistingRun:
    """Checks ``config`` against the run already in ``output_dir`` (reads only; every worker may call it).
    Refused: a resume under another config (the error lists every differing field), and ``steps`` below the
    step the run reached."""
    out = config.output_dir
    config_path = fileio.join(out, features.TRAINING_CONFIG_FILE)
    metrics_path = fileio.join(out, features.METRICS_FILE)
    step = checkpoint_step(out)
    holds = [name for name in (features.TRAINING_CONFIG_FILE, features.METRICS_FILE, features.EXPORT_DIR)
             if fileio.exists(fileio.join(out, name))] + ([features.CHECKPOINT_DIR] if step else [])
    if not holds:
        return ExistingRun("new")
    if config.on_existing == "fresh":
        return ExistingRun("fresh", step)
    saved, problem = _saved_config(config_path, holds)
    changes = [] if saved is None else [
        f"{name}: {_show(old)} -> {_show(new)}" for name, (old, new) in saved.differences(config).items()
        if not any(name == f or name.startswith((f + ".", f + "[")) for f in CHANGEABLE_ON_RESUME)]
    if step and saved is not None and "optimizer.freeze_layers" in saved.differences(config):
        raise TrainingError(f"{out} holds a checkpoint trained with optimizer.freeze_layers="
                            f"{saved.optimizer.freeze_layers}; its optimizer state covers those trainable weights "
                            f"only, so it cannot continue with {config.optimizer.freeze_layers} (not even with "
                            f"on_existing=override): use on_existing=fresh or another output_dir")
    if config.on_existing == "resume" and (problem or changes):
        detail = problem or "it was trained with another config; fields that differ (saved -> now):\n  " + "\n  ".join(changes)
        raise TrainingError(
            f"{out} holds a training run and on_existing=resume: {detail}\nUse the run's config to resume it, "
            f"on_existing=fresh to start a new run (the old one is moved aside), on_existing=override to continue "
            f"its checkpoint under this config (recorded), or another output_dir.")
    if step > config.steps:
        raise TrainingError(f"steps: {config.steps} is below step {step}, which the run in {out} already reached "
                            f"(give steps >= {step}, or on_existing=fresh)")
    previous = json.loads(fileio.read_text(metrics_path)) if fileio.exists(metrics_path) else None
    if config.on_existing == "override" and (problem or changes):
        return ExistingRun("override", step, previous, tuple(changes) or (problem,))
    if step >= config.steps and previous is not None:
        return ExistingRun("complete", step, previous)
    return ExistingRun("resume", step, previous)


def checkpoint_step(output_dir: str) -> int:
    """The step of the run's latest checkpoint (``ckpt-<step>``, as the loop names them); 0 without one."""
    latest = tf.train.latest_checkpoint(fileio.join(output_dir, features.CHECKPOINT_DIR))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _saved_config(path: str, holds: list[str]) -> tuple[TrainConfig | None, str]:
    if not fileio.exists(path):
        return None, f"it has {', '.join(holds)} but no {features.TRAINING_CONFIG_FILE} to compare this config with"
    try:
        return TrainConfig.from_dict(load_mapping(path), source=path), ""
    except ConfigError as err:
        return None, f"its {path} cannot be read as a training config ({err})"


def _show(value) -> str:
    return repr(value) if value is MISSING or isinstance(value, (str, dict)) else str(value)


def move_aside(output_dir: str) -> str:
    """``on_existing=fresh``: renames the old run to ``<output_dir>.previous-<time>``; -> the new name. Nothing
    is deleted; object stores cannot rename a folder in one step, so there it is refused."""
    if fileio.is_remote(output_dir):
        raise TrainingError(f"on_existing=fresh: {output_dir} is remote, where a run cannot be moved aside in one "
                            f"step; give another output_dir, or move or delete the old run yourself")
    base = os.path.abspath(output_dir)
    target = f"{base}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.lexists(target):
        target, n = f"{base}.previous-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    try:
        os.rename(base, target)
    except OSError as err:
        raise TrainingError(f"on_existing=fresh: cannot move {output_dir} aside ({err}); move it yourself, or give "
                            f"another output_dir") from None
    log.warning("on_existing=fresh: moved the previous run in %s to %s", output_dir, target)
    return target


def keep_overridden_config(output_dir: str, existing: ExistingRun) -> dict:
    """``on_existing=override``: keeps the old config beside the new one; -> the record for metrics.json."""
    saved = fileio.join(output_dir, features.TRAINING_CONFIG_FILE)
    kept = fileio.join(output_dir, f"training_config.step-{existing.checkpoint_step}.yaml")
    if fileio.exists(saved):
        fileio.atomic_write_bytes(kept, fileio.read_bytes(saved))
    log.warning("on_existing=override: continuing %s at step %d under a changed config:\n  %s", output_dir,
                existing.checkpoint_step, "\n  ".join(existing.changes))
    return {"at_step": existing.checkpoint_step, "changes": list(existing.changes),
            "previous_config": kept if fileio.exists(saved) else None}


def _run_config(folder: str) -> TrainConfig:
    path = fileio.join(folder, features.TRAINING_CONFIG_FILE)
    if not fileio.exists(path):
        raise TrainingError(f"{folder}: no {features.TRAINING_CONFIG_FILE} (not a training run or its export)")
    return TrainConfig.from_dict(load_mapping(path), source=path)


def evaluate_run(config: EvaluateConfig) -> dict:
    """Per-task metrics of ``<model_dir>/model.keras`` on records (default: the run's evaluation sources)."""
    config.validate()
    require_complete(config.model_dir)
    run = _run_config(config.model_dir)
    specs = config.data or run.data.eval
    if not specs:
        raise TrainingError(f"data: none given and {config.model_dir}/{features.TRAINING_CONFIG_FILE} has no data.eval")
    model = load_base_model(config.model_dir)
    encoder = encoder_of(_encoder_dir(config.model_dir))
    inputs = run_inputs(run, specs, model.backbone, encoder, "data", tasks=model.tasks)
    dataset = data_lib.make_dataset(inputs.sources, inputs.layout, run.data, config.batch_size, training=False)
    metrics = evaluate(model, dataset, inputs.layout, config.max_batches)
    if config.baselines:
        _add_baselines(metrics, config, run, model, encoder, dataset, inputs.layout)
    metrics["model_dir"] = config.model_dir
    metrics["data"] = list(specs)
    if config.output:
        fileio.atomic_write_text(config.output, json.dumps(metrics, indent=2))
    return metrics


def _add_baselines(metrics: dict, config: EvaluateConfig, run: TrainConfig, model, encoder, dataset, layout) -> None:
    """Fits each task's baseline on training records and scores it on the evaluation examples the model saw."""
    train_specs = config.baseline_train or run.data.train
    if not train_specs:
        log.warning("baselines: no training records (baseline_train, or the run's data.train); skipped")
        return
    train_inputs = run_inputs(run, train_specs, model.backbone, encoder, "baseline_train", tasks=model.tasks)
    train_dataset = data_lib.make_dataset(train_inputs.sources, train_inputs.layout, run.data, config.batch_size,
                                          training=False)
    train = collect_examples(train_dataset, config.baseline_max_examples)
    evaluation = collect_examples(dataset, max_batches=config.max_batches)
    for task in layout.tasks:
        scores = metrics.get(task.name)
        if not isinstance(scores, dict):
            continue
        baseline = task.baseline(train, evaluation)
        scores.update(baseline)
        # What the model adds, as metrics a gate can require: e.g. accuracy_over_baseline >= 0.03.
        for key, value in baseline.items():
            name = key[len(BASELINE_PREFIX):]
            if key.startswith(BASELINE_PREFIX) and isinstance(scores.get(name), float):
                scores[f"{name}_over_baseline"] = scores[name] - value
    metrics["baseline_train"] = list(train_specs)


def _encoder_dir(folder: str) -> str:
    candidate = fileio.join(folder, features.ENCODER_DIR)
    return candidate if fileio.exists(fileio.join(candidate, features.ENCODER_FILE)) else ""


def export_run(output_dir: str) -> dict:
    """Rebuilds the run's model, restores its latest checkpoint and writes the export (as at the end of training)."""
    from trainer.training.export import export_model  # noqa: PLC0415

    run = _run_config(output_dir)
    checkpoint_dir = fileio.join(output_dir, features.CHECKPOINT_DIR)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if not latest:
        raise TrainingError(f"{checkpoint_dir}: no checkpoint to export")
    encoder = encoder_of(run.encoder_dir, run.init_from)
    base = load_base_model(run.init_from) if run.init_from else None
    backbone = backbone_for(run, base)
    inputs = training_inputs(run, backbone, encoder, verify=False)
    model, _ = build_training_model(run, inputs.tasks, backbone, base)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    result = export_model(model, run, inputs.layout, encoder.folder)
    result["checkpoint"] = latest
    return result
