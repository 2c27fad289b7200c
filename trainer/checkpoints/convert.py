"""`bertkeras convert`: any supported checkpoint -> a `.keras` model + the encoder assets + a report.

The conversion is verified twice: a round trip (our weights written back in the source format and read
again must equal the source tensors exactly; BERT formats), and, when reference outputs are given (an
``.npz`` of inputs and a third-party implementation's outputs), output parity at every non-padded position;
the step fails when the maximum absolute difference exceeds ``parity_tolerance``. Outputs are written only
after both checks pass, each file atomically, and the completion marker last (model folders without it are
refused by the loaders, :mod:`trainer.model.saving`).

Remote checkpoints (``gs://``) are read the one way our code reads remote files (:mod:`trainer.fileio`): the
checkpoint's files (only those the converters read) are copied into a local temporary folder, then converted
from there; errors name the remote paths.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile

import numpy as np

from trainer import features, fileio
from trainer.checkpoints import bert, openai_gpt
from trainer.checkpoints.common import ConversionReport
from trainer.checkpoints.config import CheckpointError, ConvertConfig, SourceFormat  # noqa: F401 - re-exported
from trainer.features import COMPLETE_FILE, ENCODER_DIR, MODEL_FILE
from trainer.model.saving import save_model

REPORT_FILE = features.CONVERSION_REPORT_FILE

# Reference-output names used by HF / Google dumps -> our output names.
REFERENCE_OUTPUTS = {
    "last_hidden_state": features.SEQUENCE_OUTPUT, "sequence_output": features.SEQUENCE_OUTPUT,
    "pooler_output": features.POOLED_OUTPUT, "pooled_output": features.POOLED_OUTPUT,
    "mlm_logits": bert.MLM_HEAD, "nsp_logits": bert.NSP_HEAD, "lm_logits": openai_gpt.LM_HEAD,
}


# The files the converters read from a checkpoint folder (a remote folder's other files are not copied).
CHECKPOINT_FILES = re.compile(
    r"(model\.safetensors|config\.json|bert_config\.json|vocab\.txt|params_shapes\.json|params_\d+\.npy"
    r"|encoder_bpe_40000\.json|vocab_40000\.bpe|.+\.index|.+\.data-\d+-of-\d+)")


def _local_copy(config: ConvertConfig, tmp: str) -> tuple[ConvertConfig, dict[str, str]]:
    """``config`` with each remote path replaced by a local copy under ``tmp`` (for a checkpoint folder, file or
    TF1 prefix: the files of its folder the converters read, and the one named); -> it and {local: remote}."""
    changes, names = {}, {}
    if fileio.is_remote(config.source):
        source = config.source.rstrip("/")
        folder, name = source, ""
        if not fileio.list_files(source):  # not a folder: a file or a TF1 prefix in one
            folder, name = source.rsplit("/", 1)
            if not any(rel == name or rel.startswith(name + ".") for rel in fileio.list_files(folder)):
                raise CheckpointError(f"{config.source}: not found (no such file, folder or TF1 checkpoint prefix)")
        local = os.path.join(tmp, "checkpoint")
        fileio.copy_to_local(folder, local, lambda rel: "/" not in rel and (
            rel == name or CHECKPOINT_FILES.fullmatch(rel) is not None))
        os.makedirs(local, exist_ok=True)
        changes["source"], names[local] = os.path.join(local, name) if name else local, folder
    for field in ("config_file", "vocab_file", "merges_file", "reference_outputs"):
        path = getattr(config, field)
        if path and fileio.is_remote(path):
            if not fileio.exists(path):
                raise CheckpointError(f"{field}: {path}: file not found")
            local = os.path.join(tmp, field, path.rstrip("/").rsplit("/", 1)[-1])
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "wb") as f:
                f.write(fileio.read_bytes(path))
            changes[field], names[local] = local, path
    return dataclasses.replace(config, **changes), names


def detect_format(source: str) -> str:
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    if source.endswith(".safetensors") or os.path.exists(os.path.join(folder, "model.safetensors")):
        return "huggingface"
    if os.path.exists(os.path.join(folder, "params_shapes.json")):
        return "openai_gpt"
    if source.endswith(".index") or os.path.exists(source + ".index") or any(
        f.endswith(".index") for f in (os.listdir(folder) if os.path.isdir(folder) else [])
    ):
        return "google_tf1"
    raise CheckpointError(
        f"{source}: unknown checkpoint format (expected model.safetensors, params_shapes.json or a TF1 *.ckpt.index)"
    )


def _beside(config: ConvertConfig, name: str) -> str:
    folder = config.source if os.path.isdir(config.source) else os.path.dirname(config.source)
    return os.path.join(folder, name)


def load_source(config: ConvertConfig):
    """-> (model, transformer config, report, encoder or None)."""
    from trainer.text.bpe import GPT1Encoder  # noqa: PLC0415
    from trainer.text.wordpiece import WordPieceEncoder  # noqa: PLC0415

    fmt = config.source_format if config.source_format != "auto" else detect_format(config.source)
    encoder = None
    if fmt == "openai_gpt":
        vocab = config.vocab_file or _beside(config, "encoder_bpe_40000.json")
        merges = config.merges_file or _beside(config, "vocab_40000.bpe")
        if os.path.exists(vocab):
            encoder = GPT1Encoder.from_files(vocab, merges)
        model, tconfig, report = openai_gpt.load_openai_gpt(config.source, encoder.vocab_size if encoder else None)
    else:
        default_config = "bert_config.json" if fmt == "google_tf1" else "config.json"
        config_file = config.config_file or _beside(config, default_config)
        if fmt == "google_tf1":
            model, tconfig, report = bert.load_tf1(config.source, config_file)
        else:
            weights = config.source if config.source.endswith(".safetensors") else _beside(config, "model.safetensors")
            model, tconfig, report = bert.load_huggingface(weights, config_file)
        vocab = config.vocab_file or _beside(config, "vocab.txt")
        if os.path.exists(vocab):
            encoder = WordPieceEncoder.from_file(vocab, lower_case=config.lower_case)
    if encoder is None:
        report.notes.append("no vocabulary found beside the checkpoint: no encoder assets written")
    elif encoder.vocab_size != tconfig.vocab_size:
        raise CheckpointError(
            f"{getattr(encoder, 'source', 'vocabulary')}: {encoder.vocab_size} tokens, but the checkpoint's embedding "
            f"has {tconfig.vocab_size} rows"
        )
    return model, tconfig, report, encoder


def round_trip(model, tconfig, report: ConversionReport, source_tensors: dict[str, np.ndarray]) -> None:
    """Writes the model back in its source format, reads it again, and records the largest difference."""
    with tempfile.TemporaryDirectory() as tmp:
        if report.source_format == bert.TF1_FORMAT:
            back, _ = bert.read_tf1(bert.export_tf1(model, tconfig, tmp))
        elif report.source_format == bert.HF_FORMAT:
            prefix = "bert." if any(k.startswith("bert.") for k in source_tensors) else ""
            back = bert.read_safetensors(bert.export_huggingface(model, tconfig, tmp, prefix=prefix))
        else:
            raise ValueError(f"no writer for {report.source_format}")
    diffs = {n: float(np.abs(back[n].astype(np.float64) - source_tensors[n]).max()) for n in report.mapped}
    worst = max(diffs.values())
    report.parity["round_trip_max_abs_diff"] = worst
    if worst != 0.0:
        raise CheckpointError(f"round trip changed tensor {max(diffs, key=diffs.get)} by {worst}")


def reference_parity(model, reference_file: str, tolerance: float, report: ConversionReport) -> None:
    data = np.load(reference_file)
    ids = data["input_ids"]
    padding = data["attention_mask"] if "attention_mask" in data.files else np.ones_like(ids)
    inputs = {
        "token_ids": ids,
        "segment_ids": data["token_type_ids"] if "token_type_ids" in data.files else None,
        "padding_mask": padding,
        "attention_mask": None,
    }
    names = set(model.input.keys()) if isinstance(model.input, dict) else set()
    if features.MASKED_POSITIONS in names:  # every position, so the MLM logits compare position by position
        inputs[features.MASKED_POSITIONS] = np.tile(np.arange(ids.shape[1], dtype="int32"), (ids.shape[0], 1))
    outputs = {k: np.asarray(v) for k, v in model(inputs, training=False).items()}
    real = padding.astype(bool)
    checked = {}
    for ref_name, ours in REFERENCE_OUTPUTS.items():
        if ref_name not in data.files or ours not in outputs:
            continue
        ref, out = data[ref_name], outputs[ours]
        diff = np.abs(out[real] - ref[real]) if ref.ndim >= 2 and ref.shape[:2] == ids.shape else np.abs(out - ref)
        checked[ours] = float(diff.max())
    if not checked:
        raise CheckpointError(f"{reference_file}: no reference output this model produces ({sorted(data.files)})")
    report.parity.update({f"{k}_max_abs_diff": v for k, v in checked.items()})
    report.parity["tolerance"] = tolerance
    worst = max(checked, key=checked.get)
    if checked[worst] > tolerance:
        raise CheckpointError(
            f"{reference_file}: {worst} differs from the reference by {checked[worst]:.3g} > tolerance {tolerance}"
        )


def convert(config: ConvertConfig) -> ConversionReport:
    config.validate()
    if not any(fileio.is_remote(p) for p in (config.source, config.config_file, config.vocab_file,
                                             config.merges_file, config.reference_outputs)):
        return _convert(config)
    with tempfile.TemporaryDirectory(prefix="bertkeras-convert-") as tmp:
        local, remote_names = _local_copy(config, tmp)
        try:
            return _convert(local, remote=config, remote_names=remote_names)
        except CheckpointError as err:  # name the remote files, not their temporary copies
            raise CheckpointError(_remote_names(str(err), remote_names)) from None


def _remote_names(text: str, names: dict[str, str]) -> str:
    for local, remote in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(local, remote)
    return text


def _convert(config: ConvertConfig, remote: ConvertConfig | None = None,
             remote_names: dict[str, str] | None = None) -> ConversionReport:
    """Converts from local files; ``remote``: the config as given, whose paths the report and config.yaml keep."""
    model, tconfig, report, encoder = load_source(config)
    if report.source_format == bert.TF1_FORMAT:
        round_trip(model, tconfig, report, bert.read_tf1(report.source)[0])
    elif report.source_format == bert.HF_FORMAT:
        round_trip(model, tconfig, report, bert.read_safetensors(report.source))
    else:
        report.notes.append("round trip: no writer for the GPT-1 release format")
    if config.reference_outputs:
        reference_parity(model, config.reference_outputs, config.parity_tolerance, report)
    if remote is not None:
        report.source = _remote_names(report.source, remote_names or {})
        report.notes = [_remote_names(note, remote_names or {}) for note in report.notes]
        config = remote
    def write(folder: str) -> None:
        report.save(fileio.join(folder, REPORT_FILE))
        save_model(model, fileio.join(folder, MODEL_FILE))
        if encoder is not None:
            encoder.save(fileio.join(folder, ENCODER_DIR))
        config.save(fileio.join(folder, "config.yaml"))

    # Published whole, as exports are: a failed reconversion leaves the earlier conversion in place.
    fileio.publish_folder(config.output_dir, write, COMPLETE_FILE)
    return report
