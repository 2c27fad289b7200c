"""Pretraining-record throughput on Debian's KJV in Google's format (1x: 4.1 MB, 31,102 verses, 1,189 chapters;
4x: the 1x file plus three copies with shuffled chapters), MiniLM's uncased vocabulary, max_seq_length 128,
max_predictions_per_seq 20, masked_lm_prob 0.15, dupe_factor 1: the settings of the issue's Google baseline.

Each run is the whole process, `python -m components.preprocessing pretraining ...`, timed from outside; peak
memory is the largest sum of RSS over the process and all its children, sampled every 50 ms from /proc.
Prints medians of --runs for 1x and 4x, and the steady-state rate (4x - 1x instances) / (4x - 1x seconds).

With --google DIR (a folder holding Google's `create_pretraining_data.py` and `tokenization.py`, e.g. the
anchor in ../shared/anchors/google-bert; not part of this project) Google's script runs too, unmodified
(benchmarks/google_pretraining_data.py), interleaved with ours on the same files and settings, and the
steady-state ratio is taken within the run. --corpus_scale N adds one run of ours over the KJV N times (50: 207 MB).

    .venv/bin/python benchmarks/bench_preprocess.py [--runs 3] [--workers 1] [--google DIR] [--corpus_scale 50]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from results import record  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



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


def timed(command: list[str]) -> tuple[float, float, str]:
    """Runs ``command`` from the repository root; -> (wall seconds, peak MiB over its process tree, its output)."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, tree_rss_mib(process.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{output[-2000:]}")
    return wall, peak, output


def run_ours(corpus: str, out: str, vocab: str, workers: int) -> dict:
    wall, peak, output = timed([
        sys.executable, "-m", "components.preprocessing", "pretraining", "--inputs", corpus, "--output_dir", out,
        "--encoder.vocab_file", vocab, "--num_workers", str(workers),
    ])
    summary = next((json.loads(line) for line in reversed(output.splitlines()) if line.startswith('{"')), None)
    if not summary or "records" not in summary:
        raise RuntimeError(f"our preprocessing printed no summary:\n{output[-2000:]}")
    return {"wall_s": wall, "instances": summary["records"], "peak_mib": peak}


def run_google(anchor: str, corpus: str, out: str, vocab: str) -> dict:
    """Google's script with the same settings (uncased vocabulary, 128 tokens, 20 predictions, 0.15, one dupe)."""
    wall, peak, output = timed([
        sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "google_pretraining_data.py"), anchor,
        f"--input_file={corpus}", f"--output_file={out}.tfrecord", f"--vocab_file={vocab}", "--do_lower_case=True",
        "--max_seq_length=128", "--max_predictions_per_seq=20", "--masked_lm_prob=0.15", "--dupe_factor=1",
    ])
    wrote = re.findall(r"Wrote (\d+) total instances", output)
    if not wrote:
        raise RuntimeError(f"Google's script printed no instance count:\n{output[-2000:]}")
    return {"wall_s": wall, "instances": int(wrote[-1]), "peak_mib": peak}


def medians(values: list[dict], megabytes: float) -> dict:
    wall = statistics.median(v["wall_s"] for v in values)
    instances = values[0]["instances"]
    return {"wall_s": round(wall, 2), "instances": instances, "instances_per_s": round(instances / wall, 1),
            "mb_per_s": round(megabytes / wall, 3), "peak_mib": round(statistics.median(v["peak_mib"] for v in values), 1),
            "runs": len(values)}


def steady_state(small: dict, large: dict) -> float:
    """Instances per second once started: the extra instances of the larger corpus over its extra time."""
    return (large["instances"] - small["instances"]) / (large["wall_s"] - small["wall_s"])


def main() -> None:
    import corpora  # noqa: PLC0415

    from components.corpora import write_kjv_corpus  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--google", default="", help="folder with Google's create_pretraining_data.py and "
                        "tokenization.py (e.g. ../shared/anchors/google-bert); without it the comparison is skipped")
    parser.add_argument("--corpus_scale", type=int, default=0, help="also one run of ours over the KJV this many times")
    args = parser.parse_args()
    vocab = os.path.join(corpora.minilm_dir(), "vocab.txt")
    paths = {"ours": lambda corpus, out: run_ours(corpus, out, vocab, args.workers)}
    if args.google:
        paths["google"] = lambda corpus, out: run_google(os.path.abspath(args.google), corpus, out, vocab)
    results: dict = {name: {} for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, copies in (("1x", 1), ("4x", 4)) + (((f"{args.corpus_scale}x", args.corpus_scale),) if args.corpus_scale else ()):
            sizes[name] = write_kjv_corpus(os.path.join(tmp, f"kjv_{name}.txt"), copies=copies)["bytes"] / 1e6
        runs: dict = {path: {"1x": [], "4x": []} for path in paths}
        for n in range(args.runs):  # interleaved: 1x and 4x, ours and Google's
            for size in ("1x", "4x"):
                for path, run in paths.items():
                    runs[path][size].append(run(os.path.join(tmp, f"kjv_{size}.txt"), os.path.join(tmp, f"{path}_{size}_{n}")))
                    print(f"  {path} {size} run {n + 1}: {runs[path][size][-1]}", flush=True)
        for path in paths:
            for size, values in runs[path].items():
                results[path][size] = medians(values, sizes[size])
        if args.corpus_scale:
            big = f"{args.corpus_scale}x"
            one = run_ours(os.path.join(tmp, f"kjv_{big}.txt"), os.path.join(tmp, f"ours_{big}"), vocab, args.workers)
            results["ours"][big] = medians([one], sizes[big])
            shutil.rmtree(os.path.join(tmp, f"ours_{big}"), ignore_errors=True)
    figures: dict = {"config": {"workers": args.workers, "runs": args.runs, "corpus_mb": sizes}, "results": results}
    print(f"\nKJV pretraining records, {args.workers} worker(s), median of {args.runs} whole-process runs (interleaved)")
    for path, sized in results.items():
        for size, r in sized.items():
            print(f"  {path:6s} {size:>4s}: {r['wall_s']:7.1f} s  {r['instances']:7d} instances  {r['instances_per_s']:7.1f} inst/s"
                  f"  {r['mb_per_s']:.3f} MB/s  peak {r['peak_mib']:.0f} MiB")
    ours = results["ours"]
    figures["steady_state_instances_per_s"] = steady = steady_state(ours["1x"], ours["4x"])
    print(f"  ours steady state (1x -> 4x): {steady:.0f} instances/s")
    print(f"  ours peak memory 4x / 1x: {ours['4x']['peak_mib'] / ours['1x']['peak_mib']:.2f} (target <= 1.2)")
    if args.corpus_scale:
        big = f"{args.corpus_scale}x"
        figures[f"steady_state_4x_to_{big}"] = far = steady_state(ours["4x"], ours[big])
        figures[f"peak_{big}_over_1x"] = ours[big]["peak_mib"] / ours["1x"]["peak_mib"]
        print(f"  ours steady state (4x -> {big}): {far:.0f} instances/s (target >= the 1x -> 4x rate, {steady:.0f})")
        print(f"  ours peak memory {big} / 1x: {figures[f'peak_{big}_over_1x']:.2f} (target <= 1.2)")
    if "google" in results:
        google = figures["google_steady_state_instances_per_s"] = steady_state(results["google"]["1x"], results["google"]["4x"])
        figures["steady_state_ratio"] = steady / google
        print(f"  Google steady state: {google:.0f} instances/s; ours / Google: {steady / google:.1f}x (target >= 10x)")
        print(f"  instances ours / Google: 1x {ours['1x']['instances'] / results['google']['1x']['instances']:.3f}, "
              f"4x {ours['4x']['instances'] / results['google']['4x']['instances']:.3f}")
    print(json.dumps(figures))
    print("appended to", record("preprocess", figures))


if __name__ == "__main__":
    main()
