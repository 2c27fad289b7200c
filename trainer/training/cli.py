"""Training commands, shared by ``python -m trainer`` (what the container runs) and ``bertkeras``."""

from __future__ import annotations

import argparse
import json
import logging

from trainer.config import add_config_flags, config_from_args


def _train(args: argparse.Namespace) -> int:
    from trainer.training.config import TrainConfig  # noqa: PLC0415
    from trainer.training.loop import train  # noqa: PLC0415

    result = train(config_from_args(TrainConfig, args))
    summary = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps(summary, default=str))
    return 143 if result.get("preempted") else 0


def _evaluate(args: argparse.Namespace) -> int:
    from trainer.training.config import EvaluateConfig  # noqa: PLC0415
    from trainer.training.runs import evaluate_run  # noqa: PLC0415

    print(json.dumps(evaluate_run(config_from_args(EvaluateConfig, args))))
    return 0


def _export(args: argparse.Namespace) -> int:
    from trainer.training.runs import export_run  # noqa: PLC0415

    print(json.dumps(export_run(args.run_dir)))
    return 0


def add_training_commands(commands) -> None:
    from trainer.training.config import EvaluateConfig, TrainConfig  # noqa: PLC0415

    train = commands.add_parser("train", help="pretraining and/or fine-tuning (any strategy; resumes from checkpoints)")
    add_config_flags(train, TrainConfig)
    train.set_defaults(run=_train)
    evaluate = commands.add_parser("evaluate", help="per-task metrics of an exported model on records")
    add_config_flags(evaluate, EvaluateConfig)
    evaluate.set_defaults(run=_evaluate)
    export = commands.add_parser("export", help="export a run's latest checkpoint (model.keras + serving SavedModel)")
    export.add_argument("run_dir", help="the run's output_dir")
    export.set_defaults(run=_export)


def main(argv: list[str] | None = None) -> int:
    import sys  # noqa: PLC0415

    from trainer.config import ConfigError  # noqa: PLC0415
    from trainer.training.config import TrainingError  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m trainer", description="bertkeras trainer (the container's entry point)")
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ValueError, TrainingError) as err:
        print(f"trainer: error: {err}", file=sys.stderr)
        return 2
