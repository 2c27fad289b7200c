"""Runs a whole pipeline on this machine with ``kfp.local`` (SubprocessRunner without a venv: every component
runs in a subprocess of this Python environment, Beam on DirectRunner, training on CPU). A real run, not a
dry run: artifacts land under ``pipeline_root``."""

from __future__ import annotations

import json
import os
import re
import time
import warnings

from pipelines.config import PipelineConfig
from trainer.config import ConfigError
from pipelines.definitions import build_pipeline


def _check_paths(config: PipelineConfig, parameters: dict) -> None:
    """kfp.local's SubprocessRunner replaces the text "python3" in every argument of a component's command
    with the interpreter's path, which corrupts any path containing it (e.g. .../lib/python3.11/...)."""
    text = json.dumps({**config.to_dict(), **parameters})
    if "python3" in text:
        culprit = next(v for v in re.findall(r'"([^"]*python3[^"]*)"', text))
        raise ConfigError(f"{culprit!r}: kfp.local cannot pass paths containing 'python3' to components; "
                          "copy or link the files elsewhere")


def run_local(config: PipelineConfig, pipeline_root: str, parameters: dict | None = None) -> dict:
    from kfp import local  # noqa: PLC0415

    _check_paths(config, parameters or {})
    os.makedirs(pipeline_root, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.abspath(pipeline_root),
               raise_on_error=True)
    pipeline = build_pipeline(config, target="local")
    started = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        pipeline(**(parameters or {}))
    return {"pipeline": config.pipeline, "pipeline_root": os.path.abspath(pipeline_root),
            "wall_seconds": round(time.time() - started, 1), "artifacts": artifact_index(pipeline_root)}


def artifact_index(pipeline_root: str) -> dict[str, str]:
    """task/output -> path of every artifact of the latest run under ``pipeline_root``."""
    runs = sorted((os.path.join(pipeline_root, d) for d in os.listdir(pipeline_root)
                   if os.path.isdir(os.path.join(pipeline_root, d))), key=os.path.getmtime)
    if not runs:
        return {}
    index = {}
    for task in sorted(os.listdir(runs[-1])):
        task_dir = os.path.join(runs[-1], task)
        if os.path.isdir(task_dir):
            for output in sorted(os.listdir(task_dir)):
                index[f"{task}/{output}"] = os.path.join(task_dir, output)
    return index
