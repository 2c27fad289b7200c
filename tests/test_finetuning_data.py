"""Fine-tuning records (sentence and token level), the vocabulary step, and `bertkeras preprocess` end to end."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from components.corpora import kjv_chapters
from components.preprocessing.finetuning import FinetuningDataConfig, run
from components.preprocessing.vocabulary import VocabularyConfig, train_vocabulary
from trainer import features
from trainer.config import ConfigError
from trainer.tasks import TaskConfig, make_task
from trainer.tasks.base import RecordShape
from trainer.text.factory import EncoderConfig, load_encoder
from trainer.text.wordpiece import WordPieceEncoder


@pytest.fixture(scope="module")
def encoder_config(minilm_dir):
    return EncoderConfig(vocab_file=os.path.join(minilm_dir, "vocab.txt"))


def _spec(task: str, kind: str, seq_length: int) -> dict:
    return make_task(TaskConfig(name=task, kind=kind, num_classes=2)).record_spec(RecordShape(seq_length))


def records(folder, task, spec):
    files = sorted(f for f in os.listdir(folder) if f.startswith(f"{task}-"))
    return [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset([os.path.join(folder, f) for f in files])]


def test_sentence_level_records_with_pairs_and_extraction_index(encoder_config, tmp_path):
    data = tmp_path / "pairs.tsv"
    rows = ["text\ttext_b\tlabel", "In the beginning\tGod created the heaven\tlaw", "Jesus wept.\tHe was troubled\tgospel",
            "And Moses spake\tunto the people\tlaw", "missing label only"]
    data.write_text("\n".join(rows) + "\n")
    manifest = run(FinetuningDataConfig(
        task="book", inputs=(str(data),), output_dir=str(tmp_path / "out"), encoder=encoder_config, text_b_field="text_b",
        max_seq_length=16,
    ))
    assert manifest["labels"] == ["gospel", "law"] and manifest["records"] == 3
    assert (tmp_path / "out" / "book_labels.txt").read_text().split() == ["gospel", "law"]
    assert manifest["counts"]["dead_letters"] == 1
    encoder = WordPieceEncoder.from_file(encoder_config.vocab_file)
    parsed = records(tmp_path / "out", "book", _spec("book", "sentence", 16))
    by_label = {int(r["book_labels"][0]): r for r in parsed}
    law = [r for r in parsed if int(r["book_labels"][0]) == 1]
    assert len(law) == 2 and int(by_label[0]["book_index"][0]) == 0
    first = [r for r in parsed if int(r["input_ids"][1]) == encoder.encode("in")[0]][0]
    ids = first["input_ids"].numpy().tolist()
    expected = [101, *encoder.encode("In the beginning"), 102, *encoder.encode("God created the heaven"), 102]
    assert ids[: len(expected)] == expected
    assert first["segment_ids"].numpy().tolist()[: len(expected)] == [0] * 5 + [1] * 5


def test_last_extraction_index_and_truncation(encoder_config, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "word " * 50, "label": "a"}) + "\n" + json.dumps({"text": "short", "label": "b"}) + "\n")
    manifest = run(FinetuningDataConfig(
        task="t", inputs=(str(data),), input_format="jsonl", output_dir=str(tmp_path / "out"), encoder=encoder_config,
        max_seq_length=12, extraction_index="last",
    ))
    assert manifest["counts"]["truncated_examples"] == 1
    for r in records(tmp_path / "out", "t", _spec("t", "sentence", 12)):
        n = int(r["input_mask"].numpy().sum())
        assert int(r["t_index"][0]) == n - 1 and int(r["input_ids"][n - 1]) == 102


def test_token_level_labels_on_first_subword(encoder_config, tmp_path):
    data = tmp_path / "train.conll"
    data.write_text("-DOCSTART- -X- O\n\nJehoshaphat B-PER\nwept O\n. O\n\nin O\nJerusalem B-LOC\n")
    manifest = run(FinetuningDataConfig(
        task="ner", level="token", input_format="conll", inputs=(str(data),), output_dir=str(tmp_path / "out"),
        encoder=encoder_config, max_seq_length=16,
    ))
    assert manifest["labels"] == ["B-LOC", "B-PER", "O"] and manifest["records"] == 2
    encoder = WordPieceEncoder.from_file(encoder_config.vocab_file)
    pieces = encoder.encode("Jehoshaphat")
    assert len(pieces) > 1
    parsed = records(tmp_path / "out", "ner", _spec("ner", "token", 16))
    sentence = [r for r in parsed if int(r["input_ids"][1]) == pieces[0]][0]
    labels, weights = sentence["ner_labels"].numpy().tolist(), sentence["ner_weights"].numpy().tolist()
    n = len(pieces)
    assert labels[1] == 1 and weights[1] == 1.0  # B-PER on the first piece
    assert weights[2 : 1 + n] == [0.0] * (n - 1)  # continuation pieces are not scored
    assert weights[0] == 0.0 and sum(weights) == 3.0


def test_config_errors():
    with pytest.raises(ConfigError, match="input_format: token-level tasks read conll, got tsv"):
        FinetuningDataConfig(task="x", level="token", inputs=("a",), output_dir="o").validate()
    with pytest.raises(ConfigError, match="task: must be a name"):
        FinetuningDataConfig(task="my task", inputs=("a",), output_dir="o").validate()


def test_vocabulary_step_wordpiece_and_sentencepiece(tmp_path):
    corpus = tmp_path / "kjv.txt"
    corpus.write_text("\n\n".join("\n".join(v) for _, v in kjv_chapters()[:60]) + "\n")
    wp = train_vocabulary(VocabularyConfig(inputs=(str(corpus),), output_dir=str(tmp_path / "wp"), vocab_size=600, max_lines=1500))
    assert wp.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and 300 < wp.vocab_size <= 600
    assert load_encoder(str(tmp_path / "wp")).fingerprint == wp.fingerprint
    assert wp.special.id("unk") not in wp.encode("in the beginning god created the heaven and the earth")
    sp = train_vocabulary(VocabularyConfig(
        kind="sentencepiece", inputs=(str(corpus),), output_dir=str(tmp_path / "sp"), vocab_size=500, max_lines=1500,
    ))
    assert sp.vocab_size == 500 and sp.special.mask == ("[MASK]", 4)


def test_preprocess_command_from_raw_text_to_records(tmp_path):
    """The CLI as a user runs it: vocabulary from raw text, then records with that vocabulary."""
    corpus = tmp_path / "kjv.txt"
    corpus.write_text("\n\n".join("\n".join(v) for _, v in kjv_chapters()[:40]) + "\n")
    bertkeras = os.path.join(os.path.dirname(sys.executable), "bertkeras")
    vocab = subprocess.run(
        [bertkeras, "preprocess", "vocabulary", "--inputs", str(corpus), "--output_dir", str(tmp_path / "enc"),
         "--vocab_size", "500", "--max_lines", "1000"], capture_output=True, text=True, timeout=600,
    )
    assert vocab.returncode == 0, vocab.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "components.preprocessing", "pretraining", "--inputs", str(corpus),
         "--output_dir", str(tmp_path / "records"), "--encoder.assets_dir", str(tmp_path / "enc"), "--num_shards", "1"],
        capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = json.load(open(tmp_path / "records" / "manifest.json"))
    assert summary["records"] == manifest["records"] > 100
    assert manifest["encoder"]["fingerprint"] == load_encoder(str(tmp_path / "enc")).fingerprint


def test_labels_outside_the_vocabulary_become_dead_letters_naming_file_and_line(encoder_config, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("law\ngospel\n")
    data = tmp_path / "train.tsv"
    data.write_text("text\tlabel\nIn the beginning\tlaw\nJesus wept.\tpoetry\nAnd Moses spake\tlaw\n")
    manifest = run(FinetuningDataConfig(
        task="book", inputs=(str(data),), output_dir=str(tmp_path / "out"), encoder=encoder_config, label_vocabulary=str(labels),
        max_seq_length=16,
    ))
    assert manifest["records"] == 2 and manifest["counts"]["dead_letters"] == 1
    (letter,) = [json.loads(line) for line in open(tmp_path / "out" / "dead_letters.jsonl")]
    assert (letter["file"], letter["line"]) == (str(data), 3) and "poetry" in letter["reason"]
    conll = tmp_path / "train.conll"
    conll.write_text("Jesus B-PER\nwept O\n\nin O\nJerusalem B-LOC\n")
    tags = tmp_path / "tags.txt"
    tags.write_text("O\nB-PER\n")
    manifest = run(FinetuningDataConfig(
        task="ner", level="token", input_format="conll", inputs=(str(conll),), output_dir=str(tmp_path / "ner"),
        encoder=encoder_config, label_vocabulary=str(tags), max_seq_length=16,
    ))
    assert manifest["records"] == 1
    (letter,) = [json.loads(line) for line in open(tmp_path / "ner" / "dead_letters.jsonl")]
    assert (letter["file"], letter["line"], letter["byte_offset"]) == (str(conll), 4, 20) and "B-LOC" in letter["reason"]
