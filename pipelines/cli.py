"""The ``bertkeras`` command line. Each subcommand resolves its step's typed config
(defaults -> --config file -> flags / --set -> validate) and calls the library."""

from __future__ import annotations

import argparse
import os
import json
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines are noise on a CLI

from trainer.checkpoints.config import CheckpointError  # noqa: E402
from trainer.config import ConfigError, add_config_flags, config_from_args  # noqa: E402
from trainer.text.base import EncoderError  # noqa: E402
from trainer.training.config import TrainingError  # noqa: E402


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


def _pipeline_config(args: argparse.Namespace):
    from pipelines.config import PipelineConfig  # noqa: PLC0415

    return config_from_args(PipelineConfig, args)


def _parameters(args: argparse.Namespace) -> dict:
    import yaml  # noqa: PLC0415

    params = {}
    for item in args.param or []:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE")
        key, value = item.split("=", 1)
        params[key] = yaml.safe_load(value) if value.strip() else ""
    return params


def _pipeline_compile(args: argparse.Namespace) -> int:
    from pipelines.definitions import compile_pipeline  # noqa: PLC0415

    print(json.dumps({"output": compile_pipeline(_pipeline_config(args), args.output, target=args.target)}))
    return 0


def _pipeline_run(args: argparse.Namespace) -> int:
    from pipelines.local import run_local  # noqa: PLC0415

    result = run_local(_pipeline_config(args), args.pipeline_root, _parameters(args))
    print(json.dumps(result, indent=2))
    return 0


def _submit_config(args: argparse.Namespace):
    from pipelines.submit import SubmitConfig  # noqa: PLC0415

    overrides = [(f"{k[len('sub__'):]}={v}", f"--{k[len('sub__'):]}") for k, v in vars(args).items()
                 if k.startswith("sub__") and v is not None]
    return SubmitConfig.resolve(args.submit_config, overrides)


def _pipeline_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit  # noqa: PLC0415

    print(json.dumps(submit(_pipeline_config(args), _submit_config(args), _parameters(args))))
    return 0


def _pipeline_schedule(args: argparse.Namespace) -> int:
    from pipelines.submit import RetrainingSchedule, create_schedule, manage_schedules  # noqa: PLC0415

    submit_config = _submit_config(args)
    if args.action == "create":
        schedule = RetrainingSchedule.resolve(None, [f"{k}={v}" for k, v in (
            ("cron", args.cron), ("display_name", args.schedule_name), ("max_concurrent_runs", args.max_concurrent_runs),
            ("start_time", args.start_time), ("end_time", args.end_time), ("max_runs", args.max_runs),
            ("champion_tolerance", "null" if args.no_champion else None)) if v is not None])
        print(json.dumps(create_schedule(_pipeline_config(args), submit_config, schedule, _parameters(args))))
    else:
        print(json.dumps(manage_schedules(submit_config, args.action, args.name or "")))
    return 0


def _add_submit_flags(parser: argparse.ArgumentParser) -> None:
    from trainer.config import iter_leaf_fields  # noqa: PLC0415

    from pipelines.submit import SubmitConfig  # noqa: PLC0415

    group = parser.add_argument_group("SubmitConfig (where it runs)")
    group.add_argument("--submit_config", metavar="FILE", help="YAML/JSON file of SubmitConfig fields")
    for name, f, _ in iter_leaf_fields(SubmitConfig):
        group.add_argument(f"--{name}", dest=f"sub__{name}", default=None, help=f.metadata.get("help", ""))


def _add_pipeline_commands(commands) -> None:
    from pipelines.config import PipelineConfig  # noqa: PLC0415

    pipeline = commands.add_parser("pipeline", help="KFP pipelines: compile, run locally, submit, schedule")
    actions = pipeline.add_subparsers(dest="pipeline_action", required=True)
    param_help = "pipeline parameter NAME=VALUE (repeatable), e.g. --param model_display_name=kjv-v2"

    compile_ = actions.add_parser("compile", help="write the pipeline YAML")
    add_config_flags(compile_, PipelineConfig)
    compile_.add_argument("--output", required=True, help="pipeline YAML to write")
    compile_.add_argument("--target", choices=["vertex", "kubeflow", "local"], default="vertex")
    compile_.set_defaults(run=_pipeline_compile)

    run = actions.add_parser("run", help="run the whole pipeline here with kfp.local (DirectRunner, CPU)")
    add_config_flags(run, PipelineConfig)
    run.add_argument("--local", action="store_true", required=True, help="run locally (the only mode of `run`)")
    run.add_argument("--pipeline_root", default="local_outputs", help="where artifacts go")
    run.add_argument("--param", action="append", help=param_help)
    run.set_defaults(run=_pipeline_run)

    submit = actions.add_parser("submit", help="submit one run to Vertex AI Pipelines or a KFP server")
    add_config_flags(submit, PipelineConfig)
    _add_submit_flags(submit)
    submit.add_argument("--param", action="append", help=param_help)
    submit.set_defaults(run=_pipeline_submit)

    schedule = actions.add_parser("schedule", help="recurring retraining: create, list, pause, resume, delete")
    schedule.add_argument("action", choices=["create", "list", "pause", "resume", "delete"])
    schedule.add_argument("name", nargs="?", help="schedule resource name / recurring run id (pause, resume, delete)")
    add_config_flags(schedule, PipelineConfig)
    _add_submit_flags(schedule)
    schedule.add_argument("--cron", help="cron expression, e.g. '0 3 * * 1'")
    schedule.add_argument("--schedule_name", help="schedule display name")
    schedule.add_argument("--max_concurrent_runs", help="runs at the same time (default 1)")
    schedule.add_argument("--start_time", help="RFC 3339 start time")
    schedule.add_argument("--end_time", help="RFC 3339 end time")
    schedule.add_argument("--max_runs", help="stop after this many runs")
    schedule.add_argument("--no_champion", action="store_true", help="do not compare with the registered model "
                          "(by default a schedule gates each run on not falling 0.02 below it, unless the config "
                          "sets champion_tolerance)")
    schedule.add_argument("--param", action="append", help=param_help)
    schedule.set_defaults(run=_pipeline_schedule)


def step_configs():
    """Every step's config class, in the order the docs list them."""
    from trainer.checkpoints.config import ConvertConfig  # noqa: PLC0415
    from trainer.model.config import TransformerConfig  # noqa: PLC0415
    from trainer.text.config import EncoderConfig  # noqa: PLC0415

    from components.preprocessing.steps import STEPS  # noqa: PLC0415

    from trainer.training.config import EvaluateConfig, TaskConfig, TrainConfig  # noqa: PLC0415

    from pipelines.config import FinetuningTaskData, PipelineConfig, Threshold  # noqa: PLC0415
    from pipelines.submit import RetrainingSchedule, SubmitConfig  # noqa: PLC0415

    return [EncoderConfig, TransformerConfig, ConvertConfig] + [
        config for config, _, _ in STEPS.values()
    ] + [TrainConfig, TaskConfig, EvaluateConfig, PipelineConfig, FinetuningTaskData, Threshold, SubmitConfig,
         RetrainingSchedule]


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
    """The whole command tree. It imports only config modules (stdlib, yaml): `--help` stays fast, and
    TensorFlow, Beam, kfp and the Google Cloud clients load when a command runs."""
    from components.preprocessing.steps import add_step_parsers, run_step  # noqa: PLC0415
    from trainer.checkpoints.config import ConvertConfig  # noqa: PLC0415
    from trainer.text.config import EncoderConfig  # noqa: PLC0415

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
    _add_pipeline_commands(commands)

    docs = commands.add_parser("config-docs", help="print (or write) the reference of every step's config fields")
    docs.add_argument("--output", help="write to this file instead of printing")
    docs.set_defaults(run=_config_docs)
    return parser


# Commands that load TensorFlow. Its native start-up writes lines to stderr before any logging setting applies:
# on a machine without a GPU (no CUDA driver library), a failing CUDA probe, and CPU feature and oneDNN notes.
# Users read them as errors. Only those exact lines are dropped; a broken driver on a GPU machine fails differently and shows.
TENSORFLOW_COMMANDS = frozenset({"encoder", "convert", "preprocess", "train", "evaluate", "export"})
START_UP_NOISE = re.compile(
    rb"Could not find cuda drivers on your machine, GPU will not be used|failed call to cuInit: .*UNKNOWN ERROR \(303\)"
    rb"|All log messages before absl::InitializeLog\(\) is called are written to STDERR|cpu_feature_guard\.cc"
    rb"|rebuild TensorFlow with the appropriate compiler flags|oneDNN custom operations are on")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its devices with stderr (file descriptor 2, where the native code writes)
    going through a filter thread that passes every line on as it comes, except :data:`START_UP_NOISE` (so a
    crash inside the import still shows what it printed)."""
    import threading  # noqa: PLC0415

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()
        return
    read_end, write_end = os.pipe()

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines, os.fdopen(os.dup(saved), "wb", buffering=0) as out:
            for line in lines:
                if not START_UP_NOISE.search(line):
                    out.write(line)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        os.close(saved)
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TENSORFLOW_COMMANDS:
        import_tensorflow_quietly()
    try:
        return args.run(args)
    except (ConfigError, EncoderError, CheckpointError, ValueError, TrainingError) as err:
        print(f"bertkeras: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
