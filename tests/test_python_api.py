"""`import bertkeras as bk`: the seed's flow in memory (docs/python_api.md, every block run), the same batches from
in-memory examples and from the Beam step's records, config checks at construction, reruns into a used folder,
and the model answering with only the inputs its heads read."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import bertkeras as bk
from components.preprocessing.finetuning import FinetuningDataConfig, run as prepare_records
from trainer import features
from trainer.text.config import EncoderConfig
from trainer.training import data as data_lib
from trainer.training.config import DataConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "python_api.md")


def doc_blocks(path: str = DOC) -> list[str]:
    return re.findall(r"```python\n(.*?)```", open(path, encoding="utf-8").read(), flags=re.S)


def run_python(code: str, cwd) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_docs_python_api_runs_in_memory_and_reloads_in_a_fresh_process(tmp_path):
    """The seed's flow with bk: in-memory documents and examples only, MLM + next sentence + a sentence task + a
    token task on schedules from LM to tasks; saved; reloaded in another process; predictions per word."""
    blocks = doc_blocks()
    fresh = [b for b in blocks if b.startswith("# a fresh process")]
    assert len(fresh) == 1 and len(blocks) >= 5
    readme = doc_blocks(os.path.join(REPO, "README.md"))
    assert len(readme) == 1  # README's Python section, run first, as written
    first = run_python("\n".join([readme[0], *(b for b in blocks if b not in fresh)]), tmp_path).splitlines()
    assert re.fullmatch(r"\[\{'book': '(law|gospels)', 'book_probabilities': \{'gospels': .*, 'law': .*\}\}\]", first[0])
    losses = [float(x) for x in re.findall(r"[-\d.e]+", first[1].split("]")[0])]
    assert len(losses) == 4 and losses[-1] < losses[0]  # logged at steps 20, 40, 60, 80
    assert (tmp_path / "my_awesome_model.keras").exists()
    answers = run_python(fresh[0], tmp_path).splitlines()
    assert len(answers) == 2
    words = ["and god said , let there be light".split(), "and moses went up unto the mount".split()]
    for line, expected in zip(answers, words):
        label, tags = line.split(" ", 1)
        assert label in ("Ge", "Ex")
        pairs = eval(tags)  # noqa: S307 - our own printed list of (word, tag) tuples
        assert [w for w, _ in pairs] == expected and {t for _, t in pairs} <= {"CAP", "O"}


BOOK = [("In the beginning God created the heaven and the earth.", "law"), ("Jesus wept.", "gospel"),
        ("And Moses spake unto the people, saying,", "law"), ("Blessed are the meek.", "gospel"),
        ("And the LORD spake unto Moses, saying, Speak unto the children of Israel, and say unto them", "law")] * 8
CASE = [("and god said let there be light".split(), ["CAP", "CAP", "O", "O", "O", "O", "O"]),
        ("jesus wept".split(), ["CAP", "O"]), ("the lord is my shepherd".split(), ["CAP", "CAP", "O", "O", "O"])] * 10


def _batches(sources, layout, training):
    dataset = data_lib.make_dataset(sources, layout, DataConfig(train=("x",), train_weights=(3, 1), shuffle_buffer=50),
                                    8, training=training)
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(6)]


def test_in_memory_examples_give_the_beam_steps_records_and_batches(vocab, tmp_path):
    encoder = bk.WordPieceEncoder.from_file(vocab)
    (tmp_path / "book.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in BOOK))
    (tmp_path / "case.conll").write_text("\n".join("\n".join(f"{w} {t}" for w, t in zip(*s)) + "\n" for s in CASE))
    folders = []
    for task, level, fmt, path in (("book", "sentence", "tsv", "book.tsv"), ("case", "token", "conll", "case.conll")):
        out = tmp_path / task
        prepare_records(FinetuningDataConfig(task=task, level=level, input_format=fmt, inputs=(str(tmp_path / path),),
                                             output_dir=str(out), encoder=EncoderConfig(vocab_file=vocab),
                                             max_seq_length=16, num_shards=1))
        folders.append(str(out))
    memory = [bk.finetuning_records("book", [bk.Example(t, l) for t, l in BOOK], encoder, 16),
              bk.finetuning_records(bk.TaskConfig(name="case", kind="token"), CASE, encoder, 16)]
    on_disk = [data_lib.inspect_source(f) for f in folders]
    for disk, mem in zip(on_disk, memory):
        written = [r.numpy() for _, r in data_lib._records(disk, 0, 0, 1, training=False)]
        assert written == mem.records  # the same bytes, in the same order
        assert disk.manifest["labels"] == mem.manifest["labels"]
    tasks = bk.make_task(bk.TaskConfig(name="book"), 2), bk.make_task(bk.TaskConfig(name="case", kind="token"), 2)
    layout = data_lib.Layout(16, 0, tasks)
    for training in (True, False):
        a, b = _batches(on_disk, layout, training), _batches(memory, layout, training)
        assert len(a) == len(b) == 6
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    # and the scale path trains through the same call: record folders instead of in-memory records
    model = bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=16, num_layers=1,
                                                num_heads=2, intermediate_size=32, max_positions=32))
    history = bk.train(model, [bk.TaskConfig(name="book"), bk.TaskConfig(name="case", kind="token")], folders,
                       steps=4, batch_size=8, output_dir=str(tmp_path / "run"))
    assert history.steps == [4] and history.model.tasks[0].label_names == ["gospel", "law"]
    assert (tmp_path / "run" / features.EXPORT_DIR / features.MODEL_FILE).exists()


def test_bad_examples_name_the_example(vocab):
    encoder = bk.WordPieceEncoder.from_file(vocab)
    with pytest.raises(bk.DataError, match=r"case \(token\): example 1: 2 words but 1 tags"):
        bk.finetuning_records(bk.TaskConfig(name="case", kind="token"), [(["a"], ["O"]), (["a", "b"], ["O"])], encoder)
    with pytest.raises(bk.DataError, match=r"book: example 0 .*label 'x' is not in the label vocabulary"):
        bk.finetuning_records("book", [("text", "x")], encoder, labels=["law"])
    with pytest.raises(bk.DataError, match=r"book \(sentence\): example 0: must be a text \(and optional text_b\) with one label"):
        bk.finetuning_records("book", [(["a", "list"], "law")], encoder)
    with pytest.raises(bk.DataError, match="document 0 is a string"):
        bk.pretraining_records(["not a list of sentences"], encoder)


def test_configs_check_types_and_values_however_they_are_built():
    with pytest.raises(bk.ConfigError, match=r"TaskConfig: field 'kind' must be one of .*got 'sentense'"):
        bk.TaskConfig(name="a", kind="sentense")
    with pytest.raises(bk.ConfigError, match=r"TrainConfig: field 'steps' must be an integer, got 'many'"):
        bk.TrainConfig(steps="many")
    assert DataConfig(train="/path").train == ("/path",)  # as YAML's `train: /path`, not a tuple of characters
    assert bk.TaskConfig(name="a", weight=0.5).weight == bk.ScheduleConfig(value=0.5, end_value=0.5)
    assert bk.TrainConfig(tasks=[{"name": "a", "kind": "token"}]).tasks[0] == bk.TaskConfig(name="a", kind="token")
    with pytest.raises(bk.ConfigError, match="steps or epochs"):
        bk.train(None, [bk.TaskConfig(name="a")], "/nowhere")
    with pytest.raises(bk.ConfigError, match="model: give the model to train"):
        bk.train(None, [bk.TaskConfig(name="a")], "/nowhere", steps=1)


def test_rerun_into_a_used_folder_refuses_unless_told(vocab, tmp_path):
    encoder = bk.WordPieceEncoder.from_file(vocab)
    book = {"book": [bk.Example(t, l) for t, l in BOOK]}
    out = str(tmp_path / "run")

    def model():
        return bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=16, num_layers=1,
                                                   num_heads=2, intermediate_size=32, max_positions=32))

    tasks = [bk.TaskConfig(name="book")]
    first = bk.train(model(), tasks, book, encoder=encoder, steps=4, batch_size=8, max_seq_length=16,
                     output_dir=out, export=False)
    assert first.steps == [4]
    with pytest.raises(bk.TrainingError, match=r"optimizer.learning_rate: 0.0001 -> 0.001[\s\S]*resume=True"):
        bk.train(model(), tasks, book, encoder=encoder, steps=4, batch_size=8, max_seq_length=16, output_dir=out,
                 learning_rate=1e-3, export=False)
    with pytest.raises(bk.TrainingError, match=r"holds a training run with this config \(at step 4\)"):
        bk.train(model(), tasks, book, encoder=encoder, steps=4, batch_size=8, max_seq_length=16, output_dir=out,
                 export=False)
    resumed = bk.train(model(), tasks, book, encoder=encoder, steps=8, batch_size=8, max_seq_length=16,
                       output_dir=out, export=False, resume=True)
    assert resumed.metrics["resumed_from_step"] == 4 and resumed.steps == [4, 8]
    again = bk.train(model(), tasks, book, encoder=encoder, steps=4, batch_size=8, max_seq_length=16,
                     output_dir=out, export=False, overwrite=True)
    assert again.metrics["resumed_from_step"] == 0 and any(p.name.startswith("run.previous-") for p in tmp_path.iterdir())


def test_model_answers_with_only_the_inputs_its_heads_read():
    model = bk.Transformer(bk.TransformerConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                                intermediate_size=32, max_positions=32))
    from trainer.tasks.model import build_model

    tasks = [bk.make_task(bk.TaskConfig(name="mlm", kind="masked_lm")), bk.make_task(bk.TaskConfig(name="book"), 3),
             bk.make_task(bk.TaskConfig(name="tags", kind="token"), 2)]
    task_model = build_model(model, tasks)
    x = {"token_ids": np.arange(40).reshape(4, 10) % 50, "padding_mask": np.ones((4, 10), "int32")}
    out = task_model.predict(x, verbose=0)
    assert out["book"].shape == (4, 3) and out["tags"].shape == (4, 10, 2) and out["mlm"].shape == (4, 1, 50)
    full = task_model({**x, "book_index": np.zeros(4, "int32"), "masked_positions": np.zeros((4, 1), "int32"),
                       "segment_ids": np.zeros((4, 10), "int32"), "attention_mask": None})
    np.testing.assert_allclose(out["book"], full["book"], atol=1e-6)


def test_a_custom_attention_mask_reaches_the_model_in_training_and_prediction(vocab, tmp_path):
    import tensorflow as tf

    encoder = bk.WordPieceEncoder.from_file(vocab)
    calls = []

    def only_self(batch):  # each token sees itself only: what the model computes must change
        calls.append(1)
        token_ids = batch["token_ids"]
        n = tf.shape(token_ids)[1]
        return tf.broadcast_to(tf.eye(n, dtype=tf.int32), [tf.shape(token_ids)[0], n, n])

    layout = data_lib.Layout(4, 0, ())
    batch = {"token_ids": tf.ones([2, 4], tf.int32), "padding_mask": tf.ones([2, 4], tf.int32),
             "segment_ids": tf.zeros([2, 4], tf.int32)}
    np.testing.assert_array_equal(
        data_lib.model_inputs(batch, data_lib.Layout(4, 0, (), attention_mask=only_self))["attention_mask"], only_self(batch))
    assert data_lib.model_inputs(batch, layout)["attention_mask"] is None
    model = bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=16, num_layers=1,
                                                num_heads=2, intermediate_size=32, max_positions=32))
    calls.clear()
    history = bk.train(model, [bk.TaskConfig(name="case", kind="token")], {"case": CASE}, {"case": CASE[:6]},
                       encoder=encoder, steps=2, batch_size=8, max_seq_length=16, attention_mask=only_self)
    assert calls and history.eval["case"]["weight"] > 0  # traced into the training step and the evaluation
    text = ["and god said let there be light"]
    masked = bk.Predictor(history.model, encoder, attention_mask=only_self).predict(text)[0]
    plain = bk.Predictor(history.model, encoder).predict(text)[0]
    assert [w for w, _ in masked["case"]] == text[0].split()
    assert masked.keys() == plain.keys()
    assert not np.allclose(history.model(batch)["case"], history.model({**batch, "attention_mask": only_self(batch)})["case"])


def test_in_memory_pretraining_records_in_each_mode_as_tf_data(vocab):
    """Google's layout from in-memory documents: pair (80/10/10 masking, is-next label 1 = random next), single,
    causal; read back through bk.batches, the batches train() reads."""
    from components.corpora import kjv_chapters

    encoder = bk.WordPieceEncoder.from_file(vocab)
    documents = [verses for _, verses in kjv_chapters()[:30]]
    # at 128 tokens chunks hold several verses; at 32 most hold one, whose B is always random (as Google's)
    pair = bk.pretraining_records(documents, encoder, mode="pair", max_seq_length=128, max_predictions_per_seq=20)
    assert pair.spec.startswith("memory:pretraining:pair:") and pair.manifest["records"] == len(pair.records) > 100
    again = bk.pretraining_records(documents, encoder, mode="pair", max_seq_length=128, max_predictions_per_seq=20)
    assert again.records == pair.records  # a document's instances follow its own seeded generator
    tasks = [bk.TaskConfig(name="masked_lm", kind="masked_lm"), bk.TaskConfig(name="next_sentence", kind="next_sentence")]
    batch = next(iter(bk.batches(pair, tasks, batch_size=len(pair.records))))
    ids, positions = batch["token_ids"].numpy(), batch["masked_positions"].numpy()
    weights, labels = batch["masked_lm_weights"].numpy(), batch["masked_lm_labels"].numpy()
    assert ids.shape == (len(pair.records), 128) and positions.shape[1] == 20 and (ids[:, 0] == 101).all()
    at_masked = np.take_along_axis(ids, positions, 1)[weights > 0]
    assert 0.75 < np.mean(at_masked == 103) < 0.85  # [MASK] for 80% of the predictions
    assert np.mean(at_masked == labels[weights > 0]) > 0.05  # ~10% kept as they were
    assert 0.35 < batch["next_sentence_labels"].numpy().mean() < 0.65
    single = bk.pretraining_records(documents, encoder, mode="single", max_seq_length=32)
    assert "next_sentence_labels" not in single.feature_lengths and "masked_lm_ids" in single.feature_lengths
    causal = bk.pretraining_records(documents, encoder, mode="causal", max_seq_length=32)
    blocks = next(iter(bk.batches(causal, [bk.TaskConfig(name="lm", kind="causal_lm")], batch_size=4)))
    np.testing.assert_array_equal(blocks["token_ids"].numpy()[:, 1:], blocks["lm_labels"].numpy()[:, :-1])


def test_train_reads_a_tf_data_dataset_of_serialized_records(vocab):
    import tensorflow as tf

    encoder = bk.WordPieceEncoder.from_file(vocab)
    records = bk.finetuning_records("book", [bk.Example(t, l) for t, l in BOOK], encoder, 16).records
    dataset = tf.data.Dataset.from_tensor_slices(records)
    model = bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=16, num_layers=1,
                                                num_heads=2, intermediate_size=32, max_positions=32))
    history = bk.train(model, [bk.TaskConfig(name="book", num_classes=2)], dataset, steps=2, batch_size=8)
    assert history.steps == [2] and history.model.tasks[0].num_classes == 2
    with pytest.raises(bk.DataError, match=r"tf.data:data\[0\]: a tf.data.Dataset has no record count"):
        bk.train(model, [bk.TaskConfig(name="book", num_classes=2)], dataset, epochs=1, batch_size=8)
    with pytest.raises(bk.DataError, match="a tf.data.Dataset of serialized tf.train.Example records"):
        bk.train(model, [bk.TaskConfig(name="book", num_classes=2)], tf.data.Dataset.range(3), steps=2)


def _tiny(encoder, positions=32):
    return bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=16, num_layers=1,
                                               num_heads=2, intermediate_size=32, max_positions=positions))


def test_one_label_vocabulary_per_task_across_sources(vocab):
    encoder = bk.WordPieceEncoder.from_file(vocab)
    three = BOOK + [("Thus saith the LORD of hosts.", "prophet")] * 4
    train_records = bk.finetuning_records("book", three, encoder, 16)
    held_out = [(t, l) for t, l in three if l != "law"]  # lacks a label: packed with the training vocabulary
    history = bk.train(_tiny(encoder), bk.TaskConfig(name="book"), train_records, {"book": held_out},
                       encoder=encoder, steps=2, batch_size=8, max_seq_length=16)
    assert history.eval["book"]["labels"] == ["gospel", "law", "prophet"]
    assert history.eval["book"]["weight"] == len(held_out)
    other = bk.finetuning_records("book", BOOK, encoder, 16)  # its own vocabulary: [gospel, law]
    with pytest.raises(bk.DataError, match=r"the labels of task 'book' are \['gospel', 'law'\], but the model's are "
                                           r"\['gospel', 'law', 'prophet'\]"):
        bk.train(_tiny(encoder), bk.TaskConfig(name="book"), [train_records, other], steps=2, batch_size=8)


def test_heads_of_a_given_model_and_early_stopping_and_reuse(vocab, tmp_path):
    import keras

    encoder = bk.WordPieceEncoder.from_file(vocab)
    tasks = [bk.TaskConfig(name="case", kind="token")]
    first = bk.train(_tiny(encoder), tasks, {"case": CASE}, encoder=encoder, steps=4, batch_size=8, max_seq_length=16,
                     learning_rate=1e-2, output_dir=str(tmp_path / "a"))
    head = first.model.get_layer("case").get_weights()[0]
    again = bk.train(first.model, tasks, {"case": CASE}, encoder=encoder, steps=1, batch_size=8, max_seq_length=16,
                     learning_rate=1e-9)
    np.testing.assert_allclose(again.model.get_layer("case").get_weights()[0], head, atol=1e-6)  # started from it
    reused = bk.train(_tiny(encoder), tasks, {"case": CASE}, encoder=encoder, steps=4, batch_size=8,
                      max_seq_length=16, learning_rate=1e-2, output_dir=str(tmp_path / "a"), resume=True)
    assert reused.metrics["already_complete"] and reused.model.tasks[0].name == "case"  # the run's export
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=100.0)  # never improves enough
    stopped = bk.train(_tiny(encoder), tasks, {"case": CASE}, encoder=encoder, steps=40, batch_size=8,
                       max_seq_length=16, log_every=10, callbacks=[stop])
    assert stopped.metrics["stopped_early"] and stopped.steps == [10, 20] and stopped.metrics["step"] == 20
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    bk.train(_tiny(encoder), tasks, {"case": CASE}, encoder=encoder, steps=1, batch_size=8, max_seq_length=16,
             output_dir=str(tmp_path / "notes"), overwrite=True, export=False)
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine"  # no run there: nothing moved aside


def test_predictor_tags_every_word_and_fits_the_model(vocab):
    encoder = bk.WordPieceEncoder.from_file(vocab)
    tasks = [bk.TaskConfig(name="case", kind="token"), bk.TaskConfig(name="cap", kind="token")]
    history = bk.train(_tiny(encoder, positions=16), tasks, {"case": CASE, "cap": CASE}, encoder=encoder, steps=1,
                       batch_size=8, max_seq_length=16)
    long_text = " ".join(["jesus \u00ad wept"] * 10)  # a soft hyphen has no pieces; 30 words do not fit in 16
    answer = bk.Predictor(history.model, encoder).predict(iter([long_text]))[0]
    words = long_text.split()
    assert [w for w, _ in answer["case"]] == words and [w for w, _ in answer["cap"]] == words
    tags = dict(enumerate(t for _, t in answer["case"]))
    assert tags[1] is None and tags[0] in ("CAP", "O") and tags[2] in ("CAP", "O")  # no pieces: no tag, no shift
    assert tags[len(words) - 1] is None  # cut off by the model's 16 positions
    with pytest.raises(bk.ConfigError, match="has no task heads"):
        bk.Predictor(history.model.backbone, encoder)
    with pytest.raises(ValueError, match=r"inputs \['padding_mask'\] are required"):
        history.model({"token_ids": np.ones((1, 4), "int32")})


def test_a_run_on_in_memory_data_says_so_when_its_data_is_needed_again(vocab, tmp_path):
    from trainer.training.config import EvaluateConfig
    from trainer.training.runs import evaluate_run

    encoder = bk.WordPieceEncoder.from_file(vocab)
    bk.train(_tiny(encoder), bk.TaskConfig(name="book"), {"book": BOOK}, {"book": BOOK[:8]}, encoder=encoder, steps=1,
             batch_size=8, max_seq_length=16, output_dir=str(tmp_path / "run"))
    with pytest.raises(bk.DataError, match=r"memory:finetuning:book:\w+: this run read data held in memory"):
        evaluate_run(EvaluateConfig(model_dir=str(tmp_path / "run" / "export"), baselines=False))


def test_training_with_length_buckets(vocab):
    """Batches padded to their length bucket go through the whole loop (XLA compiles one program per shape)."""
    encoder = bk.WordPieceEncoder.from_file(vocab)
    tasks = [bk.TaskConfig(name="book"), bk.TaskConfig(name="case", kind="token")]
    data = {"book": [bk.Example(t, l) for t, l in BOOK], "case": CASE}
    shapes = {int(b["token_ids"].shape[1]) for b in bk.batches(data, tasks, 8, encoder, 32, training=True,
                                                                data_config={"length_buckets": 4}).take(20)}
    assert shapes and shapes <= {8, 16, 24, 32} and 32 not in shapes  # no example here is longer than 24 tokens
    history = bk.train(_tiny(encoder), tasks, data, encoder=encoder, steps=6, batch_size=8, max_seq_length=32,
                       log_every=3, data_config={"length_buckets": 4}, runtime={"steps_per_loop": 3})
    assert history.steps == [3, 6] and all(np.isfinite(history.history["loss"]))


def test_saved_model_of_sentence_tasks_answers_as_the_model_does(vocab, tmp_path):
    """With sentence heads only, the SavedModel runs the last block at [CLS] only (and groups the request by
    length): its probabilities equal the trained model's on the same texts padded to the trained length."""
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_text  # noqa: F401, PLC0415 - the SavedModel's tokenizer ops

    encoder = bk.WordPieceEncoder.from_file(vocab)
    model = bk.Transformer(bk.TransformerConfig(vocab_size=encoder.vocab_size, hidden_size=16, num_layers=2,
                                                num_heads=2, intermediate_size=32, max_positions=32))
    history = bk.train(model, bk.TaskConfig(name="book"), {"book": BOOK}, encoder=encoder, steps=4, batch_size=8,
                       max_seq_length=32, output_dir=str(tmp_path / "run"), export=True)
    texts = [text for text, _ in BOOK[:5]] * 2 + ["Amen."]
    served = tf.saved_model.load(str(tmp_path / "run" / "export" / "serving")).signatures["serving_default"](
        text=tf.constant(texts))
    ids = np.zeros((len(texts), 32), np.int32)
    for row, text in enumerate(texts):
        tokens = [101, *encoder.encode(text)[:30], 102]
        ids[row, :len(tokens)] = tokens
    logits = history.model.predict({"token_ids": ids, "padding_mask": (ids > 0).astype(np.int32)}, verbose=0)["book"]
    np.testing.assert_allclose(served["book_probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-5)
    assert [v.decode() for v in served["book_label"].numpy()[:2]] == [
        history.model.tasks[0].label_names[i] for i in np.argmax(logits[:2], axis=-1)]
    signatures = tf.saved_model.load(str(tmp_path / "run" / "export" / "serving")).signatures
    empty = signatures["serving_default"](text=tf.constant([], tf.string))
    assert empty["book_probabilities"].shape == (0, 2) and empty["book_label"].shape == (0,)
    # pairs: [CLS] a [SEP] b [SEP], segment 1 for b
    pairs = [(a, b) for (a, _), (b, _) in zip(BOOK[:9], BOOK[1:10])]
    served = signatures["text_pair"](text=tf.constant([a for a, _ in pairs]), text_b=tf.constant([b for _, b in pairs]))
    ids, segments = np.zeros((len(pairs), 32), np.int32), np.zeros((len(pairs), 32), np.int32)
    for row, (a, b) in enumerate(pairs):
        first, second = encoder.encode(a), encoder.encode(b)
        while len(first) + len(second) > 29:  # round-robin trimming, as the SavedModel's: the first keeps a tie
            if len(first) > len(second):
                first = first[:-1]
            else:
                second = second[:-1]
        tokens = [101, *first, 102, *second, 102]
        ids[row, :len(tokens)] = tokens
        segments[row, len(first) + 2:len(tokens)] = 1
    logits = history.model.predict({"token_ids": ids, "padding_mask": (ids > 0).astype(np.int32),
                                    "segment_ids": segments}, verbose=0)["book"]
    np.testing.assert_allclose(served["book_probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-5)
