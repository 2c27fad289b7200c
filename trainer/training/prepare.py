"""A run's set-up, shared by training, evaluation and export: the encoder, the base model and backbone, the
task objects (classes resolved from the label files), the sources and the one input layout they agree on."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import keras

from trainer import features, fileio
from trainer.model.backbone import Transformer
from trainer.model.saving import load_model, load_model_folder
from trainer.tasks import DynamicMasking, Task, make_tasks
from trainer.tasks.model import TaskModel, backbone_of, build_model, rebuild_backbone, transfer_weights
from trainer.training import data as data_lib
from trainer.training.config import TrainConfig, TrainingError


@dataclasses.dataclass(frozen=True)
class Encoder:
    """The model's text encoder: its folder (None when the model has none) and fingerprint."""

    folder: str | None
    fingerprint: str | None


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a run reads: its sources (none for synthetic data), its tasks and the layout they share."""

    sources: tuple[data_lib.Source, ...]
    layout: data_lib.Layout

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.layout.tasks


def encoder_of(encoder_dir: str, init_from: str = "") -> Encoder:
    """``encoder_dir``, else ``<init_from>/encoder``, else none."""
    from trainer.text.factory import load_encoder  # noqa: PLC0415 - TensorFlow Text loads only when needed

    folder = encoder_dir or (fileio.join(init_from, features.ENCODER_DIR) if init_from else "")
    if folder and fileio.exists(fileio.join(folder, features.ENCODER_FILE)):
        return Encoder(folder, load_encoder(folder).fingerprint)
    if encoder_dir:
        raise TrainingError(f"encoder_dir: {encoder_dir} has no {features.ENCODER_FILE}")
    return Encoder(None, None)


def load_base_model(init_from: str) -> keras.Model:
    """A model folder's model (refused while one of our exports or conversions there is incomplete,
    :func:`trainer.model.saving.require_complete`), or one ``.keras`` file."""
    if init_from.endswith(".keras"):
        if not fileio.exists(init_from):
            raise TrainingError(f"init_from: {init_from} not found")
        return load_model(init_from)
    if not fileio.exists(fileio.join(init_from, features.MODEL_FILE)):
        raise TrainingError(f"init_from: {fileio.join(init_from, features.MODEL_FILE)} not found (expected a "
                            f"folder with {features.MODEL_FILE})")
    return load_model_folder(init_from)


def backbone_for(config: TrainConfig, base: keras.Model | None, backbone: keras.Model | None = None) -> keras.Model:
    """The backbone a run builds on: the one given, else a fresh copy of the base model's (its weights are
    copied later), else our transformer from ``config.model``."""
    if backbone is not None:
        return backbone
    if base is not None:
        trained = backbone_of(base)
        fresh = rebuild_backbone(trained)
        fresh.set_weights(trained.get_weights())  # before the heads are built: sentence heads start from its pooler
        return fresh
    return Transformer(config.model)


def dynamic_masking(config: TrainConfig, encoder: Encoder) -> DynamicMasking | None:
    """The masking spec from the model's encoder (mask and special token ids), when dynamic masking is on."""
    if not config.data.dynamic_masking:
        return None
    if encoder.folder is None:
        raise TrainingError("data.dynamic_masking: needs the encoder (encoder_dir or init_from/encoder) for the mask token")
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    text_encoder = load_encoder(encoder.folder)
    special = text_encoder.special
    unselectable = tuple(special.id(name) for name in ("pad", "start", "end", "delimiter") if getattr(special, name))
    return DynamicMasking(text_encoder.vocab_size, special.id("mask"), tuple(sorted(set(unselectable))),
                          config.data.masked_lm_prob)


def run_inputs(config: TrainConfig, specs: Sequence[str], backbone: keras.Model, encoder: Encoder, role: str,
               tasks: Sequence[Task] | None = None, label_folders: Sequence[str] = (), verify: bool | None = None,
               in_memory: Mapping[str, data_lib.Source] = MappingProxyType({})) -> Inputs:
    """The one place that decides a run's input layout (training, evaluation and export alike): sources are
    inspected and checked against the tasks and the backbone; without ``specs``, the synthetic layout.
    ``in_memory``: sources held in memory (:func:`trainer.training.data.memory_source`) by their spec."""
    if not specs:
        task_objects = tuple(tasks) if tasks is not None else make_tasks(config.tasks, label_folders)
        layout = data_lib.Layout(config.data.synthetic_seq_length, config.data.synthetic_predictions, task_objects)
        return Inputs((), layout)
    sources = [in_memory[s] if s in in_memory else data_lib.inspect_source(s) for s in specs]
    folders = list(label_folders) + [s.label_place for s in sources]
    try:
        task_objects = tuple(tasks) if tasks is not None else make_tasks(config.tasks, folders)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    layout = data_lib.check_sources(
        sources, task_objects, getattr(backbone, "max_sequence_length", None), getattr(backbone, "vocabulary_size", None),
        encoder.fingerprint, config.data.verify_records if verify is None else verify, role=role,
        masking=dynamic_masking(config, encoder), dynamic_predictions=config.data.max_predictions,
        every_task=role != "data.eval")
    return Inputs(tuple(sources), layout)


def training_inputs(config: TrainConfig, backbone: keras.Model, encoder: Encoder, verify: bool | None = None,
                    in_memory: Mapping[str, data_lib.Source] = MappingProxyType({})) -> Inputs:
    return run_inputs(config, () if config.data.synthetic else config.data.train, backbone, encoder, "data.train",
                      verify=verify, in_memory=in_memory)


def build_training_model(config: TrainConfig, tasks: Sequence[Task], backbone: keras.Model,
                         base: keras.Model | None) -> tuple[TaskModel, dict]:
    """The model the loop trains (the last block at the heads' positions where configured); weights copied
    from ``base`` where paths and shapes agree."""
    model = build_model(backbone, tasks, last_block_at_read_positions=config.runtime.last_block_at_read_positions)
    if base is None:
        return model, {}
    copied, fresh = transfer_weights(base, model)
    return model, {"initialised_from": config.init_from, "copied_weights": len(copied), "new_weights": fresh}
