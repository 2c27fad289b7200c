"""Shared set-up of the training tests: real records from the KJV, tiny model configs, subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from components.corpora import kjv_chapters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.max_positions=128", "model.dropout=0.0", "model.attention_dropout=0.0"]


def write_kjv_corpus(path, chapters: int) -> str:
    path.write_text("\n\n".join("\n".join(verses) for _, verses in kjv_chapters()[:chapters]) + "\n", encoding="utf-8")
    return str(path)


def run_trainer(args: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m trainer ...`` in a fresh process (a strategy configures devices once per process)."""
    proc = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def model_weights(folder) -> list[np.ndarray]:
    import keras  # noqa: PLC0415

    model = keras.saving.load_model(os.path.join(folder, "export", "model.keras"), safe_mode=True)
    return [np.asarray(w) for w in model.get_weights()]
