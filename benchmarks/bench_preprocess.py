"""Pretraining-record throughput on Debian's KJV in Google's format (1x: 4.1 MB, 31,102 verses, 1,189 chapters;
4x: the 1x file plus three copies with shuffled chapters), MiniLM's uncased vocabulary, max_seq_length 128,
max_predictions_per_seq 20, masked_lm_prob 0.15, dupe_factor 1: the settings of the issue's Google baseline.

Each run is the whole process, `python -m components.preprocessing pretraining ...`, timed from outside; peak
memory is the largest sum of RSS over the process and all its children, sampled every 50 ms from /proc.
Prints medians of --runs for 1x and 4x, and the steady-state rate (4x - 1x instances) / (4x - 1x seconds).

    .venv/bin/python benchmarks/bench_preprocess.py [--runs 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from results import record  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOGLE = {"1x": {"wall_s": 22.6, "instances": 10745, "peak_mib": 638}, "4x": {"wall_s": 68.0, "instances": 44534, "peak_mib": 915}}


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total / 2**20


def run_once(corpus: str, out: str, vocab: str, workers: int) -> dict:
    command = [
        sys.executable, "-m", "components.preprocessing", "pretraining", "--inputs", corpus, "--output_dir", out,
        "--encoder.vocab_file", vocab, "--num_workers", str(workers),
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_rss_mib(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"preprocessing failed ({process.returncode})")
    summary = json.loads(process.stdout.read().strip().splitlines()[-1])
    return {"wall_s": wall, "instances": summary["records"], "peak_mib": peak}


def main() -> None:
    import corpora  # noqa: PLC0415

    from components.corpora import write_kjv_corpus  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    vocab = os.path.join(corpora.minilm_dir(), "vocab.txt")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, copies in (("1x", 1), ("4x", 4)):
            path = os.path.join(tmp, f"kjv_{name}.txt")
            sizes[name] = write_kjv_corpus(path, copies=copies)["bytes"] / 1e6
        runs = {"1x": [], "4x": []}
        for n in range(args.runs):  # interleaved 1x / 4x
            for name in runs:
                runs[name].append(run_once(os.path.join(tmp, f"kjv_{name}.txt"), os.path.join(tmp, f"out_{name}_{n}"), vocab, args.workers))
        for name, values in runs.items():
            wall = statistics.median(v["wall_s"] for v in values)
            instances = values[0]["instances"]
            results[name] = {
                "wall_s": round(wall, 2), "instances": instances, "instances_per_s": round(instances / wall, 1),
                "mb_per_s": round(sizes[name] / wall, 3), "peak_mib": round(statistics.median(v["peak_mib"] for v in values), 1),
            }
    steady = (results["4x"]["instances"] - results["1x"]["instances"]) / (results["4x"]["wall_s"] - results["1x"]["wall_s"])
    print(f"KJV pretraining records, {args.workers} worker(s), median of {args.runs} whole-process runs")
    for name, r in results.items():
        g = GOOGLE[name]
        print(
            f"  {name}: {r['wall_s']:6.1f} s  {r['instances']:6d} instances ({(r['instances'] / g['instances'] - 1) * 100:+.1f}% vs Google)"
            f"  {r['instances_per_s']:7.1f} inst/s  {r['mb_per_s']:.3f} MB/s  peak {r['peak_mib']:.0f} MiB"
        )
    print(f"  steady-state rate: {steady:.0f} instances/s (Google ~745; target >= 7,450)")
    print(f"  4x wall vs Google's 68.0 s: {results['4x']['wall_s'] / 68.0:.2f}x (target <= 0.25x)")
    print(f"  peak memory 4x / 1x: {results['4x']['peak_mib'] / results['1x']['peak_mib']:.2f} (target <= 1.2)")
    figures = {"results": results, "steady_state_instances_per_s": steady}
    print(json.dumps(figures))
    print("appended to", record("preprocess", figures))


if __name__ == "__main__":
    main()
