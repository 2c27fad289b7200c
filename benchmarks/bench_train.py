"""Training throughput: our trainer (custom loop, XLA forward/backward, compiled update, last block and MLM head
at the masked positions and [CLS] only) vs keras-hub's BertBackbone + MaskedLMHead + an NSP head trained with
``fit`` (XLA), side by side.

BERT-mini (4 layers, hidden 256, 4 heads, intermediate 1024, vocab 30522) or BERT-small (8 heads, hidden 512,
intermediate 2048), batch 32, sequence 128, 20 masked positions, MLM + NSP, AdamW. Each system runs --runs
times, interleaved; a run times --steps steps after --warmup steps (keras-hub: one ``fit``, timed from the end
of the last warm-up step to the end of the last step by a callback that reads each step's loss). Reports the
median examples/s, their ratio, the median of the per-pair ratios (ours, then keras-hub right after: robust to
the machine's drift), and the fraction of a measured XLA matmul peak: with the model's FLOPs (3 x the forward
matmuls, attention included), and with the FLOPs each system executes (ours skips 13-15% of them).

    .venv/bin/python benchmarks/bench_train.py [--size mini|small] [--runs 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from results import record  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)

SIZES = {"mini": dict(hidden=256, layers=4, heads=4, intermediate=1024),
         "small": dict(hidden=512, layers=4, heads=8, intermediate=2048)}
VOCAB, LENGTH, PREDICTIONS, BATCH = 30522, 128, 20, 32


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    a = tf.random.normal([n, n])
    f = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
    f(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def training_flops(size: dict, last_block_rows: int = LENGTH) -> float:
    """Training FLOPs per batch of one: 3 x forward matmul FLOPs. ``last_block_rows``: the rows at which the last
    block runs its queries, output projection and feed-forward (all of them, or, as ours does for MLM+NSP, the
    masked positions and [CLS]); its keys and values always span the sequence."""
    h, layers, inter = size["hidden"], size["layers"], size["intermediate"]
    per_row = 4 * h * h + 2 * h * inter + 2 * LENGTH * h  # QKV + output projection, FFN, QK^T and AV
    key_value = 2 * h * h
    encoder = (layers - 1) * per_row * LENGTH + (per_row - key_value) * last_block_rows + key_value * LENGTH
    heads = PREDICTIONS * (h * h + h * VOCAB) + h * h  # MLM transform and decoder, pooler
    return 3 * 2 * (encoder + heads)


def ours(size: dict, steps: int, warmup: int) -> float:
    from trainer.training.config import TrainConfig  # noqa: PLC0415
    from trainer.training.loop import train  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig.resolve(None, [
            f"output_dir={out}", "data.synthetic=true", f"data.synthetic_seq_length={LENGTH}",
            f"data.synthetic_predictions={PREDICTIONS}", f"data.global_batch_size={BATCH}",
            f"model.hidden_size={size['hidden']}", f"model.num_layers={size['layers']}", f"model.num_heads={size['heads']}",
            f"model.intermediate_size={size['intermediate']}", f"steps={warmup + steps}", f"log_every={warmup}",
            f"checkpoint_every={warmup + steps}", f"runtime.steps_per_loop={warmup}", "export=false",
        ])
        history = train(config)["history"]
    # history[0] covers warm-up (tracing, compilation); the rest are timed steps.
    timed = [h for h in history[1:]]
    return statistics.mean(h["examples_per_second"] for h in timed)


def keras_hub_run(size: dict, steps: int, warmup: int) -> float:
    import keras_hub  # noqa: PLC0415 - benchmark-only

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=size["layers"], num_heads=size["heads"], hidden_dim=size["hidden"],
        intermediate_dim=size["intermediate"], max_sequence_length=512)
    ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    segments = keras.Input((LENGTH,), dtype="int32", name="segment_ids")
    mask = keras.Input((LENGTH,), dtype="int32", name="padding_mask")
    positions = keras.Input((PREDICTIONS,), dtype="int32", name="mask_positions")
    out = backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": mask})
    mlm = keras_hub.layers.MaskedLMHead(vocabulary_size=VOCAB, token_embedding=backbone.token_embedding,
                                        activation=None)(out["sequence_output"], mask_positions=positions)
    nsp = keras.layers.Dense(2)(out["pooled_output"])
    model = keras.Model([ids, segments, mask, positions], {"mlm": mlm, "nsp": nsp})
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01, global_clipnorm=1.0),
                  loss={"mlm": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "nsp": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}, jit_compile=True)
    rng = np.random.default_rng(0)
    n = BATCH * (warmup + steps)
    x = {"token_ids": rng.integers(0, VOCAB, (n, LENGTH)).astype("int32"),
         "segment_ids": np.zeros((n, LENGTH), "int32"), "padding_mask": np.ones((n, LENGTH), "int32"),
         "mask_positions": np.sort(rng.integers(1, LENGTH, (n, PREDICTIONS)), axis=1).astype("int32")}
    y = {"mlm": rng.integers(0, VOCAB, (n, PREDICTIONS)).astype("int32"), "nsp": rng.integers(0, 2, (n,)).astype("int32")}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True).prefetch(2)
    ends = StepClock()
    model.fit(data, verbose=0, callbacks=[ends])  # one fit: a second call's set-up would be timed with its steps
    return steps * BATCH / (ends.times[-1] - ends.times[warmup - 1])


class StepClock(keras.callbacks.Callback):
    """When each training step finished (the loss read back, so the step's work is done)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        self.times.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="mini")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    size = SIZES[args.size]
    results = {"ours": [], "keras_hub": []}
    for _ in range(args.runs):
        results["ours"].append(ours(size, args.steps, args.warmup))
        results["keras_hub"].append(keras_hub_run(size, args.steps, args.warmup))
    peak = matmul_peak()
    flops = training_flops(size)
    executed = training_flops(size, last_block_rows=PREDICTIONS + 1)
    med = {k: statistics.median(v) for k, v in results.items()}
    figures = {
        "size": args.size, **size, "batch": BATCH, "length": LENGTH, "predictions": PREDICTIONS,
        "examples_per_second": {k: round(v, 2) for k, v in med.items()},
        "runs": {k: [round(x, 2) for x in v] for k, v in results.items()},
        "ratio_ours_over_keras_hub": round(med["ours"] / med["keras_hub"], 3),
        # each run of ours is paired with the keras-hub run right after it: the machine's drift cancels in a pair
        "pair_ratios": [round(a / b, 3) for a, b in zip(results["ours"], results["keras_hub"])],
        "median_pair_ratio": round(statistics.median(a / b for a, b in zip(results["ours"], results["keras_hub"])), 3),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        # the model's FLOPs (last block at every position) per second, as a fraction of the peak
        "fraction_of_peak": {k: round(v * flops / peak, 3) for k, v in med.items()},
        # the FLOPs each system executes: ours runs the last block at the 20 masked positions and [CLS] only
        "executed_fraction_of_peak": {"ours": round(med["ours"] * executed / peak, 3),
                                      "keras_hub": round(med["keras_hub"] * flops / peak, 3)},
    }
    print(json.dumps(figures, indent=2))
    print("appended to", record(f"train_{args.size}", figures))


if __name__ == "__main__":
    main()
