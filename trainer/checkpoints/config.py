"""The typed config and the error of `bertkeras convert`, apart from the converters so that the CLI can build
its flags and report conversion errors without importing NumPy, TensorFlow or Keras (:mod:`trainer.checkpoints.convert`
re-exports both)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import Config, option

SourceFormat = Literal["auto", "google_tf1", "huggingface", "openai_gpt"]


class CheckpointError(ValueError):
    """A checkpoint cannot be converted; the message names the file and/or tensor."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig(Config):
    """Convert a pretrained checkpoint into a bertkeras model."""

    source: str = option("", "checkpoint folder (or TF1 prefix / .safetensors file)")
    source_format: SourceFormat = option("auto", "auto-detected from the files unless given")
    config_file: str = option("", "bert_config.json / config.json (default: beside the checkpoint)")
    vocab_file: str = option("", "vocab.txt or encoder_bpe_40000.json (default: beside the checkpoint)")
    merges_file: str = option("", "GPT-1 vocab_40000.bpe (default: beside the checkpoint)")
    lower_case: bool = option(True, "WordPiece vocabularies: uncased (true) or cased")
    output_dir: str = option("", "where model.keras, encoder/ and conversion_report.json go")
    reference_outputs: str = option("", ".npz of inputs and reference outputs to check parity against")
    parity_tolerance: float = option(1e-4, "maximum absolute difference allowed against the reference outputs")

    def check(self) -> list[str]:
        errors = []
        if not self.source:
            errors.append("source: required")
        if not self.output_dir:
            errors.append("output_dir: required")
        if self.parity_tolerance <= 0:
            errors.append(f"parity_tolerance: must be > 0, got {self.parity_tolerance}")
        return errors
