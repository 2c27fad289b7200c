"""Forward (inference) throughput of our encoder vs keras-hub's BertBackbone, same configuration, side by side.

MiniLM configuration (6 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522), sequence 128, batch 32,
XLA on for both (``tf.function(jit_compile=True)``). Each run times --steps forward passes of every model in turn,
so the models of one run see the same machine; this machine's speed drifts by 10-30% within minutes, so the
ratios are taken per run (paired) and summarised by their median and range, next to the ratio of the per-model
medians and of the per-model fastest runs. keras-hub is a benchmark-only dependency (``make bench`` installs it).

    .venv/bin/python benchmarks/bench_model.py [--runs 15] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.model.backbone import Transformer  # noqa: E402
from trainer.model.config import TransformerConfig  # noqa: E402
from results import record  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)

MINILM = TransformerConfig(
    vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, max_positions=512,
)


def main() -> None:
    import keras_hub  # noqa: PLC0415 - benchmark-only

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(1000, 30000, size=(args.batch, args.length)), tf.int32)
    segments = tf.zeros_like(ids)
    mask = tf.ones_like(ids)

    ours = Transformer(MINILM)
    # keras-hub's BERT uses the tanh approximation of GELU; ours uses BERT's exact erf GELU (checkpoint parity).
    # The same-function comparison builds ours with gelu_tanh as well.
    ours_tanh = Transformer(TransformerConfig(**{**MINILM.to_dict(), "activation": "gelu_tanh"}))
    theirs = keras_hub.models.BertBackbone(
        vocabulary_size=MINILM.vocab_size, num_layers=MINILM.num_layers, num_heads=MINILM.num_heads,
        hidden_dim=MINILM.hidden_size, intermediate_dim=MINILM.intermediate_size, max_sequence_length=512,
    )

    @tf.function(jit_compile=True)
    def ours_forward(ids, segments, mask):
        out = ours({"token_ids": ids, "segment_ids": segments, "padding_mask": mask, "attention_mask": None}, training=False)
        return out["sequence_output"], out["pooled_output"]

    @tf.function(jit_compile=True)
    def ours_tanh_forward(ids, segments, mask):
        out = ours_tanh({"token_ids": ids, "segment_ids": segments, "padding_mask": mask, "attention_mask": None}, training=False)
        return out["sequence_output"], out["pooled_output"]

    @tf.function(jit_compile=True)
    def theirs_forward(ids, segments, mask):
        out = theirs({"token_ids": ids, "segment_ids": segments, "padding_mask": mask}, training=False)
        return out["sequence_output"], out["pooled_output"]

    def timed(fn):
        fn(ids, segments, mask)[0].numpy()
        start = time.perf_counter()
        for _ in range(args.steps):
            result = fn(ids, segments, mask)
        result[0].numpy()
        return time.perf_counter() - start

    functions = {"bertkeras (erf gelu)": ours_forward, "bertkeras (tanh gelu)": ours_tanh_forward, "keras_hub": theirs_forward}
    for fn in functions.values():
        timed(fn)  # compile first
    times = {name: [] for name in functions}
    for run in range(args.runs):
        order = list(functions.items())
        for name, fn in order[::-1] if run % 2 else order:  # alternate the order: drift favours neither side
            times[name].append(timed(fn))
    rate = {k: args.steps * args.batch / statistics.median(v) for k, v in times.items()}
    print(f"MiniLM config, batch {args.batch} x length {args.length}, XLA, {args.runs} interleaved runs of {args.steps} steps")
    for name, value in rate.items():
        print(f"  {name:22s} {value:8.1f} sequences/s (median run), {args.steps * args.batch / min(times[name]):8.1f} (fastest run)")
    summary = {}
    for name in ("bertkeras (erf gelu)", "bertkeras (tanh gelu)"):
        pairs = [b / a for a, b in zip(times[name], times["keras_hub"])]
        summary[name] = {
            "median_pair_ratio": statistics.median(pairs), "min_pair_ratio": min(pairs), "max_pair_ratio": max(pairs),
            "pairs_at_least_1": sum(p >= 1.0 for p in pairs), "pairs": len(pairs),
            "ratio_of_medians": statistics.median(times["keras_hub"]) / statistics.median(times[name]),
            "ratio_of_fastest": min(times["keras_hub"]) / min(times[name]),
        }
        s = summary[name]
        print(f"  {name} / keras_hub: median pair {s['median_pair_ratio']:.3f}x (pairs {s['min_pair_ratio']:.2f}-"
              f"{s['max_pair_ratio']:.2f}x, {s['pairs_at_least_1']} of {s['pairs']} >= 1), ratio of medians "
              f"{s['ratio_of_medians']:.3f}x, of fastest runs {s['ratio_of_fastest']:.3f}x")
    seconds = {name: [round(t, 4) for t in v] for name, v in times.items()}  # raw rounds, for later analysis
    figures = {"sequences_per_s": rate, "vs_keras_hub": summary, "seconds_per_round": seconds}
    print(json.dumps(figures))
    print("appended to", record("model_forward", figures))


if __name__ == "__main__":
    main()
