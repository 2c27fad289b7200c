"""Fine-tuning on real labelled data: a sentence task and a BIO token task trained together from two record
sources; evaluation metrics; the serving SavedModel answers raw strings in a fresh process like the model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from components.corpora import kjv_chapters
from components.preprocessing.finetuning import FinetuningDataConfig
from components.preprocessing.finetuning import run as make_finetuning_records
from trainer.text.factory import EncoderConfig, build_encoder
from trainer.training.config import EvaluateConfig, TrainConfig
from trainer.training.loop import train
from trainer.training.runs import evaluate_run, export_run
from training_helpers import REPO, TINY

SEQ = 32


def _verses():
    return [v for _, verses in kjv_chapters()[:400] for v in verses if len(v.split()) <= 20]


def _question_rows(verses):
    questions = [v for v in verses if v.rstrip().endswith("?")]
    statements = [v for v in verses if "?" not in v][: len(questions)]
    rows = [(v, "question") for v in questions] + [(v, "statement") for v in statements]
    rng = np.random.default_rng(0)
    return [rows[i] for i in rng.permutation(len(rows))]


def _conll(verses):
    """Capitalised words are B-CAP spans (names, sentence starts): labels from the text's own casing."""
    lines = []
    for verse in verses:
        for word in re.findall(r"[A-Za-z]+|[^\sA-Za-z]", verse):
            lines.append(f"{word}\t{'B-CAP' if word[0].isupper() else 'O'}")
        lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def finetuning_data(minilm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    encoder_config = EncoderConfig(vocab_file=os.path.join(minilm_dir, "vocab.txt"))
    build_encoder(encoder_config).save(str(root / "encoder"))
    verses = _verses()
    rows = _question_rows(verses)
    split = int(len(rows) * 0.8)
    out = {"encoder": str(root / "encoder")}
    for name, part in (("train", rows[:split]), ("eval", rows[split:])):
        (root / f"q_{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in part))
        make_finetuning_records(FinetuningDataConfig(
            task="question", inputs=(str(root / f"q_{name}.tsv"),), output_dir=str(root / f"question_{name}"),
            encoder=encoder_config, max_seq_length=SEQ))
        out[f"question_{name}"] = str(root / f"question_{name}")
    for name, part in (("train", verses[:1500]), ("eval", verses[1500:1800])):
        (root / f"cap_{name}.conll").write_text(_conll(part))
        make_finetuning_records(FinetuningDataConfig(
            task="cap", level="token", input_format="conll", inputs=(str(root / f"cap_{name}.conll"),),
            output_dir=str(root / f"cap_{name}"), encoder=encoder_config, max_seq_length=SEQ))
        out[f"cap_{name}"] = str(root / f"cap_{name}")
    return out


@pytest.fixture(scope="module")
def finetuned(finetuning_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned")
    d = finetuning_data
    config = TrainConfig.resolve(None, [
        f"output_dir={out}", f"encoder_dir={d['encoder']}",
        f"data.train=[{d['question_train']}, {d['cap_train']}]", f"data.eval=[{d['question_eval']}, {d['cap_eval']}]",
        "tasks=[{name: question, kind: sentence, dropout: 0.0}, {name: cap, kind: token, dropout: 0.0}]",
        "data.global_batch_size=32", "steps=240", "log_every=40", "checkpoint_every=240",
        "optimizer.learning_rate=1e-3", "optimizer.warmup_steps=20", *TINY,
    ])
    return out, train(config)


def test_two_tasks_from_two_sources_reach_high_accuracy(finetuned):
    _, result = finetuned
    question, cap = result["eval"]["question"], result["eval"]["cap"]
    assert question["labels"] == ["question", "statement"]
    assert question["accuracy"] >= 0.9 and question["macro_f1"] >= 0.9, question
    assert sum(map(sum, question["confusion_matrix"])) == question["weight"]
    assert question["accuracy"] >= question["majority_accuracy"] + 0.25
    assert cap["span_f1"] >= 0.6 and cap["accuracy"] >= cap["majority_accuracy"] + 0.05, cap


def test_evaluate_command_reproduces_the_runs_metrics(finetuned, finetuning_data, tmp_path):
    out, result = finetuned
    metrics = evaluate_run(EvaluateConfig(model_dir=str(out / "export"), output=str(tmp_path / "m.json")))
    for task in ("question", "cap"):
        assert metrics[task]["accuracy"] == pytest.approx(result["eval"][task]["accuracy"], abs=1e-6)
    assert json.loads((tmp_path / "m.json").read_text())["examples"] == metrics["examples"]
    # Each task's baseline, fit on the run's training records: a question ends in "?", which a bag of words sees;
    # the capitalised words are mostly the same few names, which a lookup knows.
    question, cap = metrics["question"], metrics["cap"]
    assert question["baseline"].startswith("TF-IDF") and question["baseline_accuracy"] >= 0.9
    assert question["accuracy_over_baseline"] == pytest.approx(question["accuracy"] - question["baseline_accuracy"])
    assert cap["baseline"].startswith("per-word lookup") and cap["baseline_accuracy"] > cap["majority_accuracy"]
    assert 0 < cap["baseline_span_f1"] <= 1 and "span_f1_over_baseline" in cap


def test_saved_model_answers_raw_strings_in_a_fresh_process(finetuned, finetuning_data):
    import keras  # noqa: PLC0415

    from trainer.text.factory import load_encoder  # noqa: PLC0415
    from trainer.training.export import SERVING_BUCKET, SERVING_GROUP  # noqa: PLC0415

    out, _ = finetuned
    # Two texts whose answers we know, then short and long verses mixed: more than one group of similar lengths.
    texts = ["And the LORD said unto Moses, Who made thee a prince?", "In the beginning God created the heaven and the earth.",
             *_verses()[::97][: SERVING_GROUP + 3]]
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        f"m = tf.saved_model.load({str(out / 'export' / 'serving')!r})\n"
        f"r = m.signatures['serving_default'](text=tf.constant({texts!r}))\n"
        "print(json.dumps({k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist() for k, v in r.items()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["question_label"][:2] == ["question", "statement"]

    encoder = load_encoder(str(out / "export" / "encoder"))
    model = keras.saving.load_model(str(out / "export" / "model.keras"), safe_mode=True)
    ids = np.zeros((len(texts), SEQ), np.int32)
    for row, text in enumerate(texts):
        tokens = [101, *encoder.encode(text)[: SEQ - 2], 102]
        ids[row, : len(tokens)] = tokens
    mask = (ids > 0).astype(np.int32)
    lengths = mask.sum(axis=1)
    assert len(set(lengths)) > 3, lengths  # the groups differ in length
    # the request is padded to its longest text rounded up, not to the trained length
    served_length = min(SEQ, -(-int(lengths.max()) // SERVING_BUCKET) * SERVING_BUCKET)
    assert served["token_ids"] == ids[:, :served_length].tolist()
    outputs = model({"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids), "attention_mask": None,
                     "question_index": np.zeros(len(texts), np.int32)}, training=False)  # the fixed-length path
    expected = keras.ops.softmax(outputs["question"]).numpy()
    np.testing.assert_allclose(np.array(served["question_probabilities"]), expected, atol=1e-5)
    real = mask[:, :served_length].astype(bool)
    cap = np.array(served["cap_probabilities"])
    np.testing.assert_allclose(cap[real], keras.ops.softmax(outputs["cap"]).numpy()[:, :served_length][real], atol=1e-5)
    # past each text's end there is no answer
    assert (cap[~real] == 0).all() and (np.array(served["cap_label_id"])[~real] == -1).all()
    assert (np.array(served["cap_label"])[~real] == "").all() and "" not in np.array(served["cap_label"])[real]


def test_export_command_rebuilds_from_the_last_checkpoint(finetuned):
    import keras  # noqa: PLC0415

    out, _ = finetuned
    before = [np.asarray(w) for w in keras.saving.load_model(str(out / "export" / "model.keras")).get_weights()]
    result = export_run(str(out))
    assert result["checkpoint"].endswith("ckpt-240")
    after = [np.asarray(w) for w in keras.saving.load_model(str(out / "export" / "model.keras")).get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_dynamic_masking_turns_task_records_into_mlm_examples(finetuning_data, tmp_path):
    """tensorflow-text masking on the fly: labelled records feed a masked-LM task beside their own task."""
    from trainer.text.factory import load_encoder  # noqa: PLC0415
    from trainer.training import data as data_lib  # noqa: PLC0415
    from trainer.model.backbone import Transformer  # noqa: PLC0415
    from trainer.training.prepare import dynamic_masking, encoder_of, training_inputs  # noqa: PLC0415

    d = finetuning_data
    config = TrainConfig.resolve(None, [
        f"output_dir={tmp_path}", f"encoder_dir={d['encoder']}", f"data.train=[{d['question_train']}]",
        "data.dynamic_masking=true", "data.max_predictions=5", "data.global_batch_size=16", "steps=6", "log_every=3",
        "export=false", "tasks=[{name: masked_lm, kind: masked_lm}, {name: question, kind: sentence}]", *TINY,
    ])
    encoder = encoder_of(d["encoder"])
    inputs = training_inputs(config, Transformer(config.model), encoder)
    sources, layout = inputs.sources, inputs.layout
    assert layout.predictions == 5 and layout.masking == dynamic_masking(config, encoder)
    batch = next(iter(data_lib.make_dataset(sources, layout, config.data, 64, training=False)))
    originals = next(iter(data_lib.make_dataset(sources, data_lib.Layout(SEQ, 0, (layout.tasks[1],)), config.data, 64,
                                                training=False)))["token_ids"].numpy()
    mask_id = load_encoder(d["encoder"]).special.id("mask")
    weights, positions = batch["masked_lm_weights"].numpy(), batch["masked_positions"].numpy()
    labels, ids = batch["masked_lm_labels"].numpy(), batch["token_ids"].numpy()
    chosen = weights > 0
    assert chosen.sum() >= 64  # ~15% of each verse, at least one per example
    rows = np.nonzero(chosen)[0]
    picked = positions[chosen]
    assert np.array_equal(labels[chosen], originals[rows, picked])  # targets are the original tokens
    assert not np.isin(originals[rows, picked], [0, 101, 102]).any()  # never [PAD]/[CLS]/[SEP]
    assert 0.6 <= np.mean(ids[rows, picked] == mask_id) <= 0.95  # ~80% become [MASK]
    unchanged = np.ones_like(ids, bool)
    unchanged[rows, picked] = False
    assert np.array_equal(ids[unchanged], originals[unchanged])
    result = train(config)
    assert result["step"] == 6 and np.isfinite(result["history"][-1]["loss/masked_lm"])


def _bilstm_backbone_class():
    """A backbone that is not our transformer: embedding + bidirectional LSTM, honouring only the contract's
    inputs and ``sequence_output`` (no pooler, no reversible embedding: the masked-LM decoder unties)."""
    import keras  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="tests")
    class BiLSTMBackbone(keras.Model):
        def __init__(self, vocabulary_size: int, hidden: int = 32, **kwargs):
            super().__init__(**kwargs)
            self.vocabulary_size, self.hidden = vocabulary_size, hidden
            self.embedding = keras.layers.Embedding(vocabulary_size, hidden, name="embedding")
            self.bilstm = keras.layers.Bidirectional(keras.layers.LSTM(hidden // 2, return_sequences=True), name="bilstm")

        def call(self, inputs, training=None):
            mask = keras.ops.cast(inputs["padding_mask"], "bool")
            return {"sequence_output": self.bilstm(self.embedding(inputs["token_ids"]), mask=mask, training=training)}

        def get_config(self):
            return {"name": self.name, "vocabulary_size": self.vocabulary_size, "hidden": self.hidden}

    return BiLSTMBackbone


def test_any_backbone_honouring_the_contract_trains_evaluates_and_exports_with_our_heads(finetuning_data, tmp_path):
    """A BiLSTM backbone written here trains a sentence task, a token task and a masked-LM task (decoder untied:
    the backbone has no reversible embedding), evaluates above the majority baseline, and exports a model.keras
    that reloads with the same outputs and a SavedModel that answers raw strings."""
    import keras  # noqa: PLC0415

    from trainer.model.saving import load_model  # noqa: PLC0415
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    d = finetuning_data
    backbone = _bilstm_backbone_class()(load_encoder(d["encoder"]).vocab_size, name="bilstm_backbone")
    config = TrainConfig.resolve(None, [
        f"output_dir={tmp_path}", f"encoder_dir={d['encoder']}", f"data.train=[{d['question_train']}, {d['cap_train']}]",
        f"data.eval=[{d['question_eval']}, {d['cap_eval']}]", "data.dynamic_masking=true", "data.max_predictions=4",
        "tasks=[{name: question, kind: sentence, dropout: 0.0}, {name: cap, kind: token, dropout: 0.0},"
        " {name: masked_lm, kind: masked_lm, weight: {value: 0.1, end_value: 0.1}}]",
        "data.global_batch_size=32", "steps=600", "log_every=200", "checkpoint_every=600", "optimizer.learning_rate=3e-3",
        "optimizer.warmup_steps=10",
    ])
    result = train(config, backbone=backbone)
    question, cap = result["eval"]["question"], result["eval"]["cap"]
    assert question["accuracy"] >= question["majority_accuracy"] + 0.2, question
    assert cap["accuracy"] >= cap["majority_accuracy"] + 0.05 and cap["span_f1"] >= 0.5, cap
    assert np.isfinite(result["history"][-1]["loss/masked_lm"])

    model = load_model(str(tmp_path / "export" / "model.keras"))
    assert type(model.backbone).__name__ == "BiLSTMBackbone"
    assert any(w.path == "masked_lm_decoder/kernel" for w in model.weights)  # untied: the backbone has none to share
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(1000, 2000, (2, SEQ)).astype("int32"), "padding_mask": np.ones((2, SEQ), "int32"),
         "segment_ids": np.zeros((2, SEQ), "int32"), "attention_mask": None, "question_index": np.zeros(2, "int32"),
         "masked_positions": np.ones((2, 4), "int32")}
    trained = result["export"]["model"]
    assert trained.endswith("model.keras")
    import tensorflow as tf  # noqa: PLC0415

    served = tf.saved_model.load(result["export"]["serving"]).signatures["serving_default"](
        text=tf.constant(["Who made thee a prince?", "And God said, Let there be light."]))
    assert [v.decode() for v in served["question_label"].numpy()] == ["question", "statement"]
    assert served["cap_label"].shape[:2] == (2, 16)  # padded to the longest text (11 tokens) rounded up to 8
    again = keras.saving.load_model(str(tmp_path / "export" / "model.keras"), safe_mode=True)
    for name in ("question", "cap", "masked_lm"):
        np.testing.assert_allclose(again(x)[name], model(x)[name], atol=1e-6)