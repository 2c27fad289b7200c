"""Encoder throughput on Debian's KJV text (31,102 verses, ~4.1 MB), 2 cores.

Prints lines/s and MB/s (median of --runs) for every encoder path, and the ratio of our WordPiece batch path
to tensorflow-text's FastBertTokenizer, measured interleaved in the same process (the issue's target: >= 0.8x).

    .venv/bin/python benchmarks/bench_encoders.py [--runs 5] [--batch 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: E402

import corpora  # noqa: E402
from trainer.text.bpe import GPT1Encoder, GPT2Encoder  # noqa: E402
from trainer.text.sentencepiece_encoder import SentencePieceEncoder  # noqa: E402
from trainer.text.wordpiece import WordPieceEncoder  # noqa: E402
from results import record  # noqa: E402 - benchmarks/results.py (the scripts run from benchmarks/)


def batches(lines, size):
    return [tf.constant(lines[i : i + size]) for i in range(0, len(lines), size)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--python-lines", type=int, default=10000, help="lines for the slow Python paths")
    args = parser.parse_args()

    lines = corpora.kjv_verses()
    megabytes = sum(len(line.encode()) + 1 for line in lines) / 1e6
    model = corpora.minilm_dir()
    wordpiece = WordPieceEncoder.from_file(os.path.join(model, "vocab.txt"))
    graph = wordpiece.tf_tokenizer()
    fast = tf_text.FastBertTokenizer(vocab=wordpiece.vocab, lower_case_nfd_strip_accents=True)
    hf = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    chunks = batches(lines, args.batch)
    results: dict[str, list[float]] = {}

    def record(name, seconds, n=len(lines), mb=megabytes):
        results.setdefault(name, []).append(seconds)
        results.setdefault(name + "#n", [n, mb])

    for fn in (lambda: [graph(c) for c in chunks], lambda: [fast.tokenize(c) for c in chunks]):
        fn()  # warm-up: tracing, table initialisation
    for _ in range(args.runs):  # interleaved, so both see the same machine state
        record("wordpiece in-graph (ragged tensor)", timed(lambda: [graph(c) for c in chunks]))
        record("tf-text FastBertTokenizer (ceiling)", timed(lambda: [fast.tokenize(c) for c in chunks]))
        record("wordpiece encode_batch (Python lists)", timed(lambda: wordpiece.encode_batch(lines)))
        record("HF tokenizers encode_batch", timed(lambda: hf.encode_batch(lines)))

    sample = lines[: args.python_lines]
    sample_mb = sum(len(line.encode()) + 1 for line in sample) / 1e6
    for _ in range(args.runs):
        fresh = WordPieceEncoder.from_file(os.path.join(model, "vocab.txt"))  # cold word cache each run
        record("wordpiece Python (Google's algorithm)", timed(lambda: [fresh.encode(t) for t in sample]), len(sample), sample_mb)

    with tempfile.TemporaryDirectory() as tmp:
        spm_encoder = SentencePieceEncoder.train(lines[::2], vocab_size=8000, character_coverage=1.0)
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(lines[::2], vocab_size=8000, special_tokens=["<|endoftext|>"])
        bpe.save_model(tmp)
        gpt2 = GPT2Encoder.from_files(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"))
        gpt1_trainer = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        gpt1_trainer.normalizer = normalizers.BertNormalizer(lowercase=True)
        gpt1_trainer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        gpt1_trainer.train_from_iterator(
            lines[::2], trainers.BpeTrainer(vocab_size=8000, special_tokens=["<unk>"], end_of_word_suffix="</w>")
        )
        os.makedirs(os.path.join(tmp, "gpt1"))
        gpt1_trainer.model.save(os.path.join(tmp, "gpt1"))
        gpt1 = GPT1Encoder.from_files(os.path.join(tmp, "gpt1", "vocab.json"), os.path.join(tmp, "gpt1", "merges.txt"))
        for encoder in (spm_encoder, gpt2, gpt1):
            encoder.encode_batch(lines[:100])
            for _ in range(args.runs):
                record(f"{encoder.kind} in-graph", timed(lambda: [encoder.tf_tokenizer()(c) for c in chunks]))
                record(f"{encoder.kind} Python", timed(lambda: [encoder.encode(t) for t in sample]), len(sample), sample_mb)
                encoder._cache = {} if hasattr(encoder, "_cache") else None  # noqa: SLF001 - cold cache per run

    print(f"KJV: {len(lines)} lines, {megabytes:.2f} MB; batch {args.batch}; median of {args.runs} runs")
    summary = {}
    for name, times in results.items():
        if name.endswith("#n"):
            continue
        n, mb = results[name + "#n"]
        median = statistics.median(times)
        summary[name] = {"lines_per_s": n / median, "mb_per_s": mb / median}
        print(f"  {name:42s} {n / median:10,.0f} lines/s {mb / median:7.2f} MB/s")
    ratios = [a / b for a, b in zip(results["tf-text FastBertTokenizer (ceiling)"], results["wordpiece in-graph (ragged tensor)"])]
    print(f"  ratio ours / FastBertTokenizer (per interleaved run, median): {statistics.median(ratios):.2f}x")
    figures = {"ratio_vs_fast_bert": statistics.median(ratios), **summary}
    print(json.dumps(figures))
    print("appended to", record("encoders", figures))


if __name__ == "__main__":
    main()
