"""Operations on a finished (or interrupted) run: evaluate an exported model, export from the last checkpoint."""

from __future__ import annotations

import json

import tensorflow as tf

from trainer import features, fileio
from trainer.config import load_mapping
from trainer.training import data as data_lib
from trainer.training.config import EvaluateConfig, TrainConfig, TrainingError
from trainer.training.metrics import evaluate
from trainer.training.prepare import (
    backbone_for, build_training_model, encoder_of, load_base_model, run_inputs, training_inputs,
)


def _run_config(folder: str) -> TrainConfig:
    path = fileio.join(folder, features.TRAINING_CONFIG_FILE)
    if not fileio.exists(path):
        raise TrainingError(f"{folder}: no {features.TRAINING_CONFIG_FILE} (not a training run or its export)")
    return TrainConfig.from_dict(load_mapping(path), source=path)


def evaluate_run(config: EvaluateConfig) -> dict:
    """Per-task metrics of ``<model_dir>/model.keras`` on records (default: the run's evaluation sources)."""
    config.validate()
    run = _run_config(config.model_dir)
    specs = config.data or run.data.eval
    if not specs:
        raise TrainingError(f"data: none given and {config.model_dir}/{features.TRAINING_CONFIG_FILE} has no data.eval")
    model = load_base_model(config.model_dir)
    encoder = encoder_of(_encoder_dir(config.model_dir))
    inputs = run_inputs(run, specs, model.backbone, encoder, "data", tasks=model.tasks)
    dataset = data_lib.make_dataset(inputs.sources, inputs.layout, run.data, config.batch_size, training=False)
    metrics = evaluate(model, dataset, inputs.layout, config.max_batches)
    metrics["model_dir"] = config.model_dir
    metrics["data"] = list(specs)
    if config.output:
        fileio.atomic_write_text(config.output, json.dumps(metrics, indent=2))
    return metrics


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
