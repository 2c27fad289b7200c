"""Start-up of the `bertkeras` command: `--help` must not import TensorFlow, Beam or KFP (they load only when a
command runs). Times whole processes, interleaved with a Python that imports nothing (the floor) and one that
imports TensorFlow (what a heavy import would cost). Results: one table, one line in
benchmarks/results/cli.jsonl.

    .venv/bin/python benchmarks/bench_cli.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from results import record, summary  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)

BIN = os.path.dirname(sys.executable)
COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "bertkeras --help": [os.path.join(BIN, "bertkeras"), "--help"],
    "bertkeras train --help": [os.path.join(BIN, "bertkeras"), "train", "--help"],
    "python -c 'import tensorflow' (for scale)": [sys.executable, "-c", "import tensorflow"],
}


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache
        wall(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            times[name].append(wall(command))
    print(f"\nwhole-process wall time, s ({args.runs} interleaved runs; median [min-max]); target <= 1.0 s")
    for name, values in times.items():
        s = summary(values)
        print(f"{name:45s} {s['median']:6.2f} [{s['min']:.2f}-{s['max']:.2f}]")
    path = record("cli", {"config": {"runs": args.runs}, "wall_s": {n: summary(v) for n, v in times.items()}})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
