"""The raw-string serving module packs a request's texts into shared rows and answers what the model answers for
each text padded alone to the trained length (tiny models; the export's fresh-process test is in
test_finetuning_training.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import features
from trainer.model.backbone import Transformer
from trainer.model.config import TransformerConfig
from trainer.model.layers import SelfAttention, TransformerBlock, freeze_for_serving
from trainer.tasks import TaskConfig, make_task
from trainer.tasks.model import build_model
from trainer.text.wordpiece import WordPieceEncoder
from trainer.training.export import ServingModule, first_fit, serving_copy

SEQ = 48


def test_first_fit_places_every_text_in_a_row_with_room():
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(3, SEQ + 1, 60))[::-1].astype(np.int32)  # longest first, as the module places
    rows, offsets = (t.numpy() for t in first_fit(tf.constant(lengths), SEQ))
    filled = np.zeros((rows.max() + 1, SEQ), int)
    for row, offset, length in zip(rows, offsets, lengths):
        assert offset + length <= SEQ
        filled[row, offset:offset + length] += 1
    assert filled.max() == 1  # no two texts share a cell
    assert filled.sum() == lengths.sum()
    # first-fit decreasing: within 11/9 of the fewest rows (+1), far fewer than one row per text
    assert rows.max() + 1 <= 11 / 9 * np.ceil(lengths.sum() / SEQ) + 1
    empty_rows, empty_offsets = first_fit(tf.zeros([0], tf.int32), SEQ)
    assert empty_rows.shape == (0,) and empty_offsets.shape == (0,)


TASK_SETS = {
    # every head reads one position: the last block runs only at those positions and each text's [CLS]
    "compact": [TaskConfig(name="topic"), TaskConfig(name="ending", extraction_index="last")],
    # heads reading every position: the packed rows' outputs are unpacked per text
    "every_position": [TaskConfig(name="topic"), TaskConfig(name="mean", pooling="mean"), TaskConfig(name="tags", kind="token")],
    # pretraining heads: masked LM is not served; next sentence reads the pooled output
    "pretraining": [TaskConfig(name="mlm", kind="masked_lm"), TaskConfig(name="nsp", kind="next_sentence")],
}
CASES = {"compact": ("compact", False), "every_position": ("every_position", False), "causal": ("compact", True),
         "pretraining": ("pretraining", False)}


def _model(task_configs, causal=False):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    config = TransformerConfig(vocab_size=30522, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                               max_positions=64, causal=causal, type_vocab_size=0 if causal else 2,
                               pooler=not causal, embedding_layer_norm=not causal)
    names = {"token": ["O", "B-x", "I-x"], "sentence": ["a", "b", "c"]}
    tasks = [make_task(c, num_classes=3, label_names=names.get(c.kind)) for c in task_configs]
    model = build_model(Transformer(config), tasks)
    rng = np.random.default_rng(1)
    for weight in model.weights:  # as if trained: biases and layer-norm offsets not zero, scales not one
        value = np.asarray(weight.numpy())
        weight.assign(value + rng.normal(0, 0.05, value.shape).astype(value.dtype))
    return model


def _fixed_length(model, encoder, texts, pairs=None):
    """The model's outputs for each text (or pair) padded alone to SEQ: the reference."""
    ids, segments = np.zeros((len(texts), SEQ), np.int32), np.zeros((len(texts), SEQ), np.int32)
    for row, text in enumerate(texts):
        tokens, kinds = [101, *encoder.encode(text), 102], None
        if pairs is not None:
            second = [*encoder.encode(pairs[row]), 102]
            kinds = [0] * len(tokens) + [1] * len(second)
            tokens = tokens + second
        assert len(tokens) <= SEQ, "the reference does not trim"
        ids[row, :len(tokens)] = tokens
        if kinds is not None:
            segments[row, :len(kinds)] = kinds
    mask = (ids > 0).astype(np.int32)
    inputs = {features.TOKEN_IDS: ids, features.PADDING_MASK: mask, features.SEGMENT_IDS: segments}
    return model(inputs, training=False), mask


def _check(model, served, expected, mask):
    """Each served head's answers equal the reference's at the real positions; none past a text's end."""
    width = served[features.PADDING_MASK].shape[1]
    np.testing.assert_array_equal(served[features.PADDING_MASK].numpy(), mask[:, :width])
    assert mask[:, width:].sum() == 0
    for task in model.tasks:
        if not task.served:
            assert f"{task.name}_probabilities" not in served
            continue
        probabilities = served[f"{task.name}_probabilities"].numpy()
        reference = tf.nn.softmax(expected[task.name]).numpy()
        label_ids = served[f"{task.name}_label_id"].numpy()
        labels = served[f"{task.name}_label"].numpy().astype(str) if task.label_names else None
        if task.kind == "token":
            real = mask[:, :width].astype(bool)
            np.testing.assert_allclose(probabilities[real], reference[:, :width][real], atol=1e-5)
            assert (probabilities[~real] == 0).all() and (label_ids[~real] == -1).all() and (labels[~real] == "").all()
            real_ids = label_ids[real]
        else:
            np.testing.assert_allclose(probabilities, reference, atol=1e-5)
            real, real_ids = slice(None), label_ids
        np.testing.assert_array_equal(real_ids, probabilities[real].argmax(-1))
        if labels is not None:  # the label names, in the request's order
            assert list(labels[real]) == [task.label_names[i] for i in real_ids]
    if features.POOLED_OUTPUT in expected:
        np.testing.assert_allclose(served[features.POOLED_OUTPUT].numpy(), expected[features.POOLED_OUTPUT], atol=1e-5)
    else:
        assert features.POOLED_OUTPUT not in served


@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_serving_answers_what_each_text_padded_alone_gets(case, vocab, kjv, tmp_path, monkeypatch):
    import keras  # noqa: PLC0415

    from trainer.training import export  # noqa: PLC0415

    monkeypatch.setattr(export, "PACKED_ROWS", 2)  # several passes of packed rows
    encoder = WordPieceEncoder.from_file(vocab)
    task_set, causal = CASES[case]
    model = _model(TASK_SETS[task_set], causal=causal)
    # built as the export builds it, here under a mixed training policy: the served copy computes in float32
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        served_model = serving_copy(model, last_block_at_read_positions=True)
        assert freeze_for_serving(served_model) == 2
        module = ServingModule(served_model, encoder.tf_tokenizer(), {"start": 101, "end": 102}, SEQ)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert module.packed and module.compact == (task_set != "every_position")
    assert all(layer.dtype_policy.name == "float32" for layer in module.heads.layers)
    # verses of 4 to 38 tokens, several to a row, one text of exactly the trained length, and a short one
    texts = [v for v in kjv[::211] if 2 <= len(encoder.encode(v)) <= SEQ - 10][:13] + ["light " * (SEQ - 2), "Jesus wept."]
    served = module.serve(tf.constant(texts))
    expected, mask = _fixed_length(model, encoder, texts)
    assert mask[-2].sum() == SEQ and served[features.PADDING_MASK].shape[1] == SEQ
    rows, _ = first_fit(tf.constant(sorted(mask.sum(axis=1), reverse=True), tf.int32), SEQ)
    assert len(texts) > int(tf.reduce_max(rows)) + 1 > 2  # texts share rows, and the rows take several passes
    _check(model, served, expected, mask)

    # pairs: each pair is one packed text with its two segments
    short = [v for v in kjv[::37] if len(encoder.encode(v)) <= 18][:10]
    served_pairs = module.serve_pair(tf.constant(short[:5]), tf.constant(short[5:]))
    _check(model, served_pairs, *_fixed_length(model, encoder, short[:5], short[5:]))

    # one text, and an empty request
    _check(model, module.serve(tf.constant(texts[3:4])), *_fixed_length(model, encoder, texts[3:4]))
    empty = module.serve(tf.constant([], tf.string))
    assert all(value.shape[0] == 0 for value in empty.values())

    if case == "compact":  # the heads and the frozen kernels travel in the SavedModel
        tf.saved_model.save(module, str(tmp_path / "serving"), signatures={"serving_default": module.serve.get_concrete_function()})
        loaded = tf.saved_model.load(str(tmp_path / "serving")).signatures["serving_default"]
        np.testing.assert_allclose(loaded(text=tf.constant(texts))["topic_probabilities"].numpy(),
                                   served["topic_probabilities"].numpy(), atol=1e-6)


def test_frozen_layers_compute_what_the_layers_compute(monkeypatch):
    """The SavedModel's copy holds the attention's side-by-side kernels as constants and computes in its serving
    schedule: the same outputs, eagerly and in a graph, with the last block at read positions (query rows apart
    from key rows) and without; training it is refused."""
    model = _model(TASK_SETS["compact"])
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (3, 20)).astype(np.int32)
    inputs = {features.TOKEN_IDS: ids, features.PADDING_MASK: (np.arange(20) < np.array([[20], [11], [5]])).astype(np.int32)}
    ran = []  # which serving-schedule methods ran (the frozen branch must be taken)
    for cls, method in ((SelfAttention, "_serving_call"), (TransformerBlock, "_serving_feed_forward")):
        original = getattr(cls, method)
        monkeypatch.setattr(cls, method, lambda self, *args, _f=original, _m=method: ran.append(_m) or _f(self, *args))
    for compact in (False, True):
        copy = serving_copy(model, last_block_at_read_positions=compact)
        before = copy(inputs, training=False)
        assert not ran
        freeze_for_serving(copy)
        after = copy(inputs, training=False)
        in_graph = tf.function(lambda x: copy(x, training=False))(inputs)  # where TensorFlow fuses the serving ops
        assert sorted(ran) == ["_serving_call"] * 4 + ["_serving_feed_forward"] * 4  # both layers, both calls
        ran.clear()
        for name in ("topic", "ending", features.POOLED_OUTPUT):
            np.testing.assert_allclose(after[name], before[name], rtol=0, atol=1e-6)
            np.testing.assert_allclose(in_graph[name], before[name], rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="frozen for inference"):
        copy(inputs, training=True)
