"""The ``bertkeras`` command line. Each subcommand resolves its step's typed config
(defaults -> --config file -> flags / --set -> validate) and calls the library."""

from __future__ import annotations

import argparse
import os
import json
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines are noise on a CLI

from trainer.checkpoints.common import CheckpointError  # noqa: E402
from trainer.config import ConfigError, add_config_flags, config_from_args  # noqa: E402
from trainer.text.base import EncoderError  # noqa: E402


def _encoder_encode(args: argparse.Namespace) -> int:
    from trainer.text.factory import EncoderConfig, build_encoder  # noqa: PLC0415

    encoder = build_encoder(config_from_args(EncoderConfig, args))
    if args.input:
        stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
        with stream:
            texts = [line.rstrip(b"\r\n") for line in stream]
    else:
        texts = [t.encode("utf-8") for t in args.text]
    for text in texts:
        ids = encoder.encode(text)
        record = {"ids": ids}
        if args.tokens:
            record["tokens"] = [encoder.id_to_token(i) for i in ids]
        print(json.dumps(record, ensure_ascii=False))
    if encoder.invalid_utf8_sequences:
        print(f"replaced {encoder.invalid_utf8_sequences} invalid UTF-8 sequence(s)", file=sys.stderr)
    return 0


def _encoder_save(args: argparse.Namespace) -> int:
    from trainer import fileio  # noqa: PLC0415
    from trainer.text.factory import EncoderConfig, build_encoder  # noqa: PLC0415

    config = config_from_args(EncoderConfig, args)
    encoder = build_encoder(config)
    encoder.save(args.output)
    config.save(fileio.join(args.output, "config.yaml"))
    print(json.dumps({"output": args.output, "vocab_size": encoder.vocab_size, "fingerprint": encoder.fingerprint}))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from trainer.checkpoints.convert import ConvertConfig, convert  # noqa: PLC0415

    config = config_from_args(ConvertConfig, args)
    report = convert(config)
    print(json.dumps({"output": config.output_dir, "mapped": len(report.mapped), "ignored": len(report.ignored),
                      "parity": report.parity, "notes": report.notes}))
    return 0


def step_configs():
    """Every step's config class, in the order the docs list them."""
    from trainer.checkpoints.convert import ConvertConfig  # noqa: PLC0415
    from trainer.model.config import HeadConfig, TransformerConfig  # noqa: PLC0415
    from trainer.text.factory import EncoderConfig  # noqa: PLC0415

    from components.preprocessing.steps import STEPS  # noqa: PLC0415

    from trainer.training.config import EvaluateConfig, TaskConfig, TrainConfig  # noqa: PLC0415

    return [EncoderConfig, TransformerConfig, HeadConfig, ConvertConfig] + [
        config for config, _, _ in STEPS.values()
    ] + [TrainConfig, TaskConfig, EvaluateConfig]


def configuration_reference() -> str:
    from trainer.config import describe_fields  # noqa: PLC0415

    lines = [
        "# Configuration reference",
        "",
        "Every step takes one typed config (a frozen dataclass). It is resolved in a fixed order: the defaults below,",
        "then an optional YAML/JSON file (`--config FILE`), then overrides (`--<field> VALUE` flags or",
        "`--set a.b=VALUE`), then validation, whose errors name the field. The resolved config is written beside the",
        "step's outputs (`config.yaml`). Generated from the dataclasses by `bertkeras config-docs`; do not edit.",
        "",
    ]
    for cls in step_configs():
        lines += [f"## {cls.__name__}", "", (cls.__doc__ or "").strip(), "", describe_fields(cls), ""]
    return "\n".join(lines)


def _config_docs(args: argparse.Namespace) -> int:
    from trainer import fileio  # noqa: PLC0415

    text = configuration_reference()
    if args.output:
        fileio.atomic_write_text(args.output, text)
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from components.preprocessing.steps import add_step_parsers, run_step  # noqa: PLC0415
    from trainer.checkpoints.convert import ConvertConfig  # noqa: PLC0415
    from trainer.text.factory import EncoderConfig  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="bertkeras", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    encoder = commands.add_parser("encoder", help="text encoders: encode text, save assets")
    actions = encoder.add_subparsers(dest="action", required=True)

    encode = actions.add_parser("encode", help="print token ids (JSON lines) of texts or of a file's lines")
    add_config_flags(encode, EncoderConfig)
    encode.add_argument("text", nargs="*", help="texts to encode")
    encode.add_argument("--input", help="file to encode line by line ('-' for stdin)")
    encode.add_argument("--tokens", action="store_true", help="also print the tokens")
    encode.set_defaults(run=_encoder_encode)

    save = actions.add_parser("save", help="write the encoder's assets, encoder.json and config.yaml to a folder")
    add_config_flags(save, EncoderConfig)
    save.add_argument("--output", required=True, help="output folder (local or gs://)")
    save.set_defaults(run=_encoder_save)


    convert = commands.add_parser(
        "convert", help="Google TF1 BERT / HF safetensors / OpenAI GPT-1 -> model.keras + encoder assets + report"
    )
    add_config_flags(convert, ConvertConfig)
    convert.set_defaults(run=_convert)

    preprocess = commands.add_parser("preprocess", help="Beam preprocessing: vocabulary, pretraining and fine-tuning records")
    add_step_parsers(preprocess.add_subparsers(dest="step", required=True))
    preprocess.set_defaults(run=run_step)

    from trainer.training.cli import add_training_commands  # noqa: PLC0415

    add_training_commands(commands)

    docs = commands.add_parser("config-docs", help="print (or write) the reference of every step's config fields")
    docs.add_argument("--output", help="write to this file instead of printing")
    docs.set_defaults(run=_config_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, EncoderError, CheckpointError, ValueError) as err:
        print(f"bertkeras: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
