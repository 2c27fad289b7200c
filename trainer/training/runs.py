"""Operations on a finished (or interrupted) run: evaluate an exported model, export from the last checkpoint."""

from __future__ import annotations

import json

import tensorflow as tf

from trainer import fileio
from trainer.config import load_mapping
from trainer.training import data as data_lib
from trainer.training.config import EvaluateConfig, TrainConfig
from trainer.training.loop import (
    CHECKPOINT_DIR, TRAINING_CONFIG_FILE, TrainingError, encoder_of, build_training_model, load_base_model,
    prepare_sources, resolve_classes,
)
from trainer.training.metrics import evaluate


def _run_config(folder: str) -> TrainConfig:
    path = fileio.join(folder, TRAINING_CONFIG_FILE)
    if not fileio.exists(path):
        raise TrainingError(f"{folder}: no {TRAINING_CONFIG_FILE} (not a training run or its export)")
    return TrainConfig.from_dict(load_mapping(path), source=path)


def evaluate_run(config: EvaluateConfig) -> dict:
    """Per-task metrics of ``<model_dir>/model.keras`` on records (default: the run's evaluation sources)."""
    config.validate()
    run = _run_config(config.model_dir)
    specs = config.data or run.data.eval
    if not specs:
        raise TrainingError(f"data: none given and {config.model_dir}/{TRAINING_CONFIG_FILE} has no data.eval")
    model = load_base_model(config.model_dir)
    from trainer.model.builder import config_from_model  # noqa: PLC0415

    encoder_dir, fingerprint = encoder_of(_encoder_dir(config.model_dir))
    sources, layout = prepare_sources(run, specs, config_from_model(model), fingerprint, "data", encoder_dir)
    num_classes, names = resolve_classes(run, [config.model_dir] + [s.folder for s in sources])
    dataset = data_lib.make_dataset(sources, layout, run.data, config.batch_size, training=False)
    metrics = evaluate(model, dataset, layout, names, num_classes, config.max_batches)
    metrics["model_dir"] = config.model_dir
    metrics["data"] = list(specs)
    if config.output:
        fileio.atomic_write_text(config.output, json.dumps(metrics, indent=2))
    return metrics


def _encoder_dir(folder: str) -> str:
    candidate = fileio.join(folder, "encoder")
    return candidate if fileio.exists(fileio.join(candidate, "encoder.json")) else ""


def export_run(output_dir: str) -> dict:
    """Rebuilds the run's model, restores its latest checkpoint and writes the export (as at the end of training)."""
    from trainer.training.export import export_model  # noqa: PLC0415

    run = _run_config(output_dir)
    checkpoint_dir = fileio.join(output_dir, CHECKPOINT_DIR)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if not latest:
        raise TrainingError(f"{checkpoint_dir}: no checkpoint to export")
    encoder_dir, fingerprint = encoder_of(run.encoder_dir, run.init_from)
    base = load_base_model(run.init_from) if run.init_from else None
    if run.data.synthetic:
        folders, layout = [], data_lib.Layout(run.data.synthetic_seq_length, run.data.synthetic_predictions, run.tasks)
    else:
        from trainer.model.builder import config_from_model  # noqa: PLC0415

        model_config = config_from_model(base) if base is not None else run.model
        sources = [data_lib.inspect_source(s) for s in run.data.train]
        layout = data_lib.check_sources(sources, run.tasks, model_config.max_positions, model_config.vocab_size,
                                        fingerprint, verify=False)
        folders = [s.folder for s in sources]
    num_classes, names = resolve_classes(run, folders)
    model, _, _ = build_training_model(run, num_classes, base)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    result = export_model(model, run, layout, encoder_dir, names, num_classes)
    result["checkpoint"] = latest
    return result

