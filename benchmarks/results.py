"""Benchmark results as files: each benchmark prints one summary table and appends one JSON line to
``benchmarks/results/<name>.jsonl`` with the git revision, the time, and this machine's float32 matmul peak
(so a figure can be read against the machine it came from). docs/benchmarks.md quotes these files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=os.path.dirname(RESULTS))
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=os.path.dirname(RESULTS)).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def matmul_peak_gflops(size: int = 2048, runs: int = 5) -> float:
    """float32 matmul throughput of this machine (TensorFlow, all cores): the best of ``runs``."""
    import tensorflow as tf  # noqa: PLC0415

    a = tf.random.uniform([size, size])
    tf.linalg.matmul(a, a).numpy()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        tf.linalg.matmul(a, a).numpy()
        best = min(best, time.perf_counter() - start)
    return round(2 * size**3 / best / 1e9, 1)


def record(name: str, figures: dict) -> str:
    """Appends one result line to ``results/<name>.jsonl``; -> the file."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.jsonl")
    line = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "revision": git_revision(),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "matmul_gflops_fp32": matmul_peak_gflops()},
            **figures}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return path


def summary(values: list[float]) -> dict:
    """Median, min and max of several runs."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "runs": len(values)}
