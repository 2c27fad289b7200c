"""The preprocessing steps by name: (config class, function). ``bertkeras preprocess <step>`` and
``python -m components.preprocessing <step>`` both dispatch through this table."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from components.preprocessing.config import (
    FinetuningDataConfig,
    PreprocessError,
    PretrainingDataConfig,
    VocabularyConfig,
)
from trainer.config import ConfigError, add_config_flags, config_from_args
from trainer.text.base import EncoderError


# The step functions import their Beam pipelines (Beam, NumPy, TensorFlow) when a step runs, not when the
# parsers are built: `--help` and the config reference need only the config classes.
def _pretraining(config: PretrainingDataConfig) -> dict:
    from components.preprocessing.pretraining import run  # noqa: PLC0415

    return run(config)


def _finetuning(config: FinetuningDataConfig) -> dict:
    from components.preprocessing.finetuning import run  # noqa: PLC0415

    return run(config)


def _vocabulary(config: VocabularyConfig) -> dict:
    from components.preprocessing.vocabulary import train_vocabulary  # noqa: PLC0415

    encoder = train_vocabulary(config)
    return {"output": config.output_dir, **encoder.identity()}


STEPS = {
    "pretraining": (PretrainingDataConfig, _pretraining, "corpus -> MLM/NSP or causal-LM TFRecords (Google's schema)"),
    "finetuning": (FinetuningDataConfig, _finetuning, "labelled TSV/CSV/JSONL/CoNLL -> task TFRecords"),
    "vocabulary": (VocabularyConfig, _vocabulary, "corpus sample -> WordPiece vocabulary or SentencePiece model"),
}


def add_step_parsers(subparsers) -> None:
    for name, (config_cls, _, help_text) in STEPS.items():
        parser = subparsers.add_parser(name, help=help_text)
        add_config_flags(parser, config_cls)
        parser.set_defaults(step=name)


def run_step(args: argparse.Namespace) -> int:
    config_cls, function, _ = STEPS[args.step]
    config = config_from_args(config_cls, args)
    result = function(config)
    summary = result if args.step == "vocabulary" else {
        "output": config.output_dir, "records": result["records"], "counts": result["counts"], "wall_seconds": result["wall_seconds"],
    }
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m components.preprocessing")
    add_step_parsers(parser.add_subparsers(dest="step", required=True))
    args = parser.parse_args(argv)
    try:
        return run_step(args)
    except (ConfigError, EncoderError, PreprocessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
