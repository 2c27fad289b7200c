"""bertkeras from Python: the original BERT-keras flow (encoders, pretraining data, a transformer or a pretrained
checkpoint, tasks, training from pretraining into fine-tuning, saving, loading, predicting) over the same
library the CLI and the pipelines run::

    import bertkeras as bk

    encoder = bk.WordPieceEncoder.from_file("vocab.txt")
    lm_data = bk.pretraining_records(documents, encoder, mode="pair", max_seq_length=64)
    book = bk.finetuning_records(bk.TaskConfig(name="book"), [("In the beginning ...", "law"), ...], encoder, 64)
    model = bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=64, ...))
    tasks = [bk.TaskConfig(name="masked_lm", kind="masked_lm", weight=bk.ScheduleConfig(kind="linear", ...)), ...]
    history = bk.train(model, tasks, [lm_data, book], steps=200, batch_size=16)
    history.model.save("my_awesome_model.keras")
    model = bk.load_model("my_awesome_model.keras")

Names load on first use, so ``import bertkeras`` itself does not import TensorFlow. See docs/python_api.md.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it (one table: __all__, the lazy loader and the docs agree)
_NAMES = {
    # text encoders
    "WordPieceEncoder": "trainer.text.wordpiece",
    "SentencePieceEncoder": "trainer.text.sentencepiece_encoder",
    "GPT2Encoder": "trainer.text.bpe",
    "GPT1Encoder": "trainer.text.bpe",
    "load_encoder": "trainer.text.factory",
    # models and checkpoints
    "Transformer": "trainer.model.backbone",
    "TransformerConfig": "trainer.model.config",
    "load_checkpoint": "bertkeras.api",
    "load_model": "bertkeras.api",
    # tasks and schedules
    "TaskConfig": "trainer.tasks.config",
    "ScheduleConfig": "trainer.tasks.config",
    "make_task": "trainer.tasks",
    # data
    "Example": "bertkeras.data",
    "finetuning_records": "bertkeras.data",
    "pretraining_records": "bertkeras.data",
    "batches": "bertkeras.api",
    # training and use
    "train": "bertkeras.api",
    "History": "bertkeras.api",
    "Predictor": "bertkeras.api",
    "TrainConfig": "trainer.training.config",
    # errors
    "ConfigError": "trainer.config",
    "DataError": "trainer.features",
    "TrainingError": "trainer.training.config",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'bertkeras' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
