"""The backbone and the task heads: shapes, masks, serialization (safe_mode), config round trips."""

import keras
import numpy as np
import pytest

from trainer.config import ConfigError
from trainer.model.backbone import Transformer
from trainer.model.config import TransformerConfig
from trainer.tasks import TaskConfig, TaskError, make_task
from trainer.tasks.model import TaskModel, transfer_weights

TINY = TransformerConfig(
    vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_positions=24,
    dropout=0.0, attention_dropout=0.0,
)
HEADS = {
    "masked_lm": {"kind": "masked_lm"},
    "next_sentence": {"kind": "next_sentence"},
    "topic": {"kind": "sentence", "num_classes": 3, "dropout": 0.0},
    "tags": {"kind": "token", "num_classes": 5, "dropout": 0.0},
}


def build_model(config: TransformerConfig, heads: dict, last_block_at_read_positions: bool = False) -> TaskModel:
    tasks = [make_task(TaskConfig(name=name, **fields)) for name, fields in heads.items()]
    return TaskModel(Transformer(config), tasks, last_block_at_read_positions)


def batch(length=10, padded=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 50, size=(2, length)).astype("int32")
    mask = np.ones((2, length), "int32")
    mask[1, length - padded:] = 0
    ids[1, length - padded:] = 0
    return {
        "token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask, "attention_mask": None,
        "masked_positions": np.array([[1, 2], [3, 4]], "int32"), "topic_index": np.array([0, 2], "int32"),
    }


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return build_model(TINY, HEADS)


def test_output_shapes(model):
    out = model(batch())
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "sequence_output": (2, 10, 16), "pooled_output": (2, 16), "masked_lm": (2, 2, 50),
        "next_sentence": (2, 2), "topic": (2, 3), "tags": (2, 10, 5),
    }


def test_keras_file_loads_in_safe_mode_with_same_outputs(model, tmp_path):
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = batch()
    for name, value in model(x).items():
        np.testing.assert_allclose(loaded(x)[name], value, atol=1e-6)
    # the LM decoder is still tied to the token embedding after loading
    tied = [w for w in loaded.weights if w.path == "token_embedding/embeddings"]
    assert len(tied) == 1


def test_get_config_round_trip(model):
    clone = TaskModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_padding_does_not_change_real_positions(model):
    x = batch(padded=3)
    short = {k: (v[1:, :7] if k in ("token_ids", "segment_ids", "padding_mask") else v) for k, v in x.items()}
    short.update(masked_positions=x["masked_positions"][1:], topic_index=x["topic_index"][1:])
    np.testing.assert_allclose(model(x)["sequence_output"][1, :7], model(short)["sequence_output"][0], atol=1e-5)


def test_explicit_attention_mask_is_applied(model):
    x = batch(padded=0)
    blocked = dict(x, attention_mask=np.broadcast_to(np.tril(np.ones((10, 10), "int32")), (2, 10, 10)).copy())
    causal = build_model(TransformerConfig(**{**TINY.to_dict(), "causal": True}), HEADS)
    causal.set_weights(model.get_weights())
    np.testing.assert_allclose(model(blocked)["sequence_output"], causal(x)["sequence_output"], atol=1e-5)
    assert np.abs(np.asarray(model(blocked)["sequence_output"]) - np.asarray(model(x)["sequence_output"])).max() > 1e-3


def test_sentence_head_reads_the_extraction_index_through_a_pooler_started_from_the_backbones(model):
    x = batch()
    out = model(x)
    head_pooler = model.get_layer("topic_pooler")
    for ours, backbone in zip(head_pooler.get_weights(), model.backbone.pooler.get_weights()):
        np.testing.assert_array_equal(ours, backbone)
    pooled = head_pooler(np.asarray(out["sequence_output"])[[0, 1], x["topic_index"]])
    np.testing.assert_allclose(out["topic"], model.get_layer("topic")(pooled), atol=1e-5)
    at_cls = dict(x, topic_index=np.zeros(2, "int32"))  # at [CLS] the head's pooler gives BERT's pooled output
    np.testing.assert_allclose(head_pooler(np.asarray(out["sequence_output"])[:, 0]), model(at_cls)["pooled_output"], atol=1e-6)


def test_mean_pooled_sentence_head_reads_the_mean_of_real_tokens_and_reloads(tmp_path):
    heads = {"masked_lm": {"kind": "masked_lm"}, "topic": {"kind": "sentence", "num_classes": 3, "dropout": 0.0, "pooling": "mean"}}
    model = build_model(TINY, heads, last_block_at_read_positions=True)  # mean pooling needs every position
    x = batch()
    out = model(x)
    assert "sequence_output" in out and not any("topic_pooler" in w.path for w in model.weights)
    seq, mask = np.asarray(out["sequence_output"]), x["padding_mask"].astype("float32")
    mean = (seq * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(out["topic"], model.get_layer("topic")(mean), atol=1e-5)
    changed = dict(x, token_ids=x["token_ids"].copy())
    changed["token_ids"][1, -3:] = 9  # padding does not move the mean
    np.testing.assert_allclose(model(changed)["topic"], out["topic"], atol=1e-5)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again(x)["topic"], out["topic"], atol=1e-6)


def test_gpt_style_encoder_without_segments_or_pooler():
    config = TransformerConfig(
        **{**TINY.to_dict(), "type_vocab_size": 0, "pooler": False, "causal": True, "embedding_layer_norm": False,
           "activation": "gelu_tanh", "layer_norm_epsilon": 1e-5}
    )
    gpt = build_model(config, {"lm": {"kind": "causal_lm"}})
    x = batch(padded=0)
    out = gpt({"token_ids": x["token_ids"], "segment_ids": None, "padding_mask": x["padding_mask"], "attention_mask": None})
    assert tuple(out["lm"].shape) == (2, 10, 50) and "pooled_output" not in out
    assert not any("segment" in w.path or "pooler" in w.path for w in gpt.weights)
    changed = x["token_ids"].copy()
    changed[:, 6:] = 7  # a causal model's outputs before position 6 do not see later tokens
    out2 = gpt({"token_ids": changed, "segment_ids": None, "padding_mask": x["padding_mask"], "attention_mask": None})
    np.testing.assert_allclose(out["lm"][:, :6], out2["lm"][:, :6], atol=1e-5)


def test_config_errors_name_fields():
    with pytest.raises(ConfigError, match="num_heads: 3 does not divide hidden_size 16"):
        TransformerConfig(**{**TINY.to_dict(), "num_heads": 3}).validate()
    with pytest.raises(TaskError, match=r"tasks: topic: num_classes is 0 and no topic_labels.txt"):
        make_task(TaskConfig(name="topic", kind="sentence")).with_classes([])
    with pytest.raises(TaskError, match=r"tasks: nsp \(next_sentence\) needs the backbone's pooled_output"):
        build_model(TransformerConfig(**{**TINY.to_dict(), "pooler": False}), {"nsp": {"kind": "next_sentence"}})
    with pytest.raises(TaskError, match=r"duplicate names"):
        TaskModel(Transformer(TINY), [make_task(TaskConfig(name="a", num_classes=2))] * 2)


def test_dropout_masks_keep_one_minus_rate_independently_fresh_per_call_with_and_without_xla():
    import tensorflow as tf  # noqa: PLC0415

    from trainer.model.layers import Dropout, SelfAttention, TransformerBlock  # noqa: PLC0415

    x = np.ones((400, 1000), np.float32)
    for jit in (True, False):  # the trainer's XLA step, and runtime.xla=false
        layer = Dropout(0.25, seed=1)
        assert (np.asarray(layer(x, training=False)) == x).all()
        step = tf.function(lambda v, layer=layer: layer(v, training=True), jit_compile=jit)
        first, second = np.asarray(step(x)), np.asarray(step(x))
        np.testing.assert_allclose(np.unique(first), [0.0, 1 / 0.75], rtol=1e-6)
        dropped, again = (first == 0).ravel(), (second == 0).ravel()
        # 400k draws: one standard deviation of each rate below is <= 7e-4
        assert abs(dropped.mean() - 0.25) < 0.004
        assert abs((dropped[:-1] & dropped[1:]).mean() - 0.0625) < 0.004  # neighbours independent
        assert abs((dropped[:-1000] & dropped[1000:]).mean() - 0.0625) < 0.004  # rows independent
        assert abs((dropped & again).mean() - 0.0625) < 0.004  # a fresh mask per call
        other_layer = Dropout(0.25, seed=2)
        other = np.asarray(tf.function(lambda v: other_layer(v, training=True), jit_compile=jit)(x)) == 0
        assert abs((dropped & other.ravel()).mean() - 0.0625) < 0.004  # layers draw independently
    rows = np.asarray(Dropout(0.5, noise_shape=(None, 1), seed=3)(x, training=True))
    assert set(np.unique(rows.std(axis=1))) == {0.0} and 100 < (rows[:, 0] == 0).sum() < 300
    half = Dropout(0.5, seed=4, dtype="mixed_bfloat16")(tf.ones((8, 8), tf.bfloat16), training=True)
    assert half.dtype == tf.bfloat16 and set(np.unique(np.asarray(half, np.float32))) <= {0.0, 2.0}
    block = TransformerBlock(num_heads=2, intermediate_size=8, attention_dropout=0.5)
    block.build((None, 4, 8))
    assert isinstance(block.attention, SelfAttention) and isinstance(block.attention._dropout_layer, Dropout)
    assert isinstance(block.dropout_layer, Dropout) and block.attention._dropout_layer.rate == 0.5


def test_gelu_matches_keras_exact_gelu():
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from trainer.model.layers import gelu_erf  # noqa: PLC0415

    z = tf.linspace(-8.0, 8.0, 1001)
    np.testing.assert_allclose(gelu_erf(z), keras.activations.gelu(z, approximate=False), atol=2e-6)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        ours, theirs = gelu_erf(z), keras.activations.gelu(z, approximate=False)
    np.testing.assert_allclose(tape.gradient(ours, z), tape.gradient(theirs, z), atol=2e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_last_block_at_read_positions_gives_the_full_models_head_outputs(causal):
    config = TransformerConfig(**{**TINY.to_dict(), "causal": causal})
    heads = {"mlm": {"kind": "masked_lm"}, "nsp": {"kind": "next_sentence"}, "topic": {"kind": "sentence", "num_classes": 3}}
    full, compact = build_model(config, heads), build_model(config, heads, last_block_at_read_positions=True)
    assert transfer_weights(full, compact)[1] == []
    rng = np.random.default_rng(0)
    inputs = {
        "token_ids": rng.integers(0, TINY.vocab_size, (3, 10)).astype("int32"), "segment_ids": np.zeros((3, 10), "int32"),
        "padding_mask": (np.arange(10) < np.array([[10], [7], [5]])).astype("int32"), "attention_mask": None,
        "masked_positions": np.array([[1, 3, 4], [2, 5, 6], [0, 1, 2]], "int32"), "topic_index": np.array([0, 3, 4], "int32"),
    }
    want, got = full(inputs), compact(inputs)
    assert set(got) == {"mlm", "nsp", "topic", "pooled_output"}  # no sequence_output: the last block ran at 3 + 2 rows
    for name in got:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    # a token-level head reads every position: the option then builds the full model
    tagger = build_model(config, {"tags": {"kind": "token", "num_classes": 2}}, last_block_at_read_positions=True)
    assert "sequence_output" in tagger.output


@pytest.mark.parametrize("mask_kind", ["padding", "causal"])
def test_fused_attention_equals_keras_multi_head_attention(mask_kind):
    """SelfAttention keeps MultiHeadAttention's weights and math but fuses the projections: same outputs and
    gradients, for self-attention (one [hidden, 3 * hidden] matmul) and for queries at a few positions (key and
    value fused), with a row that attends to nothing (zero probabilities, as MultiHeadAttention's masked softmax
    gives it when attention dropout is configured, the path every BERT/GPT config takes)."""
    import tensorflow as tf  # noqa: PLC0415

    from trainer.model.layers import SelfAttention  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 6, 16)), tf.float32)
    layer = SelfAttention(num_heads=4, key_dim=4, dropout=0.1)
    layer.build(x.shape, x.shape)
    for variable in layer.weights:  # non-zero biases, so a misplaced bias or scale shows
        variable.assign(rng.normal(size=variable.shape, scale=0.5))
    keep = (np.arange(6) < np.array([[6], [4], [0]]))[:, None, :]  # [batch, 1, key]; the last row attends nowhere
    if mask_kind == "causal":
        keep = np.logical_and(keep, np.tri(6, dtype=bool)[None])
    mask = tf.constant(keep)

    def keras_attention(query, value, mask):
        return keras.layers.MultiHeadAttention.call(layer, query, value, attention_mask=mask, training=False)

    cases = {"self": (x, x, mask), "query rows": (tf.gather(x, [5, 1], axis=1), x, mask if mask.shape[1] == 1 else tf.gather(mask, [5, 1], axis=1))}
    for name, (query, value, case_mask) in cases.items():
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([query, value])
            ours = layer(query, value if name != "self" else query, attention_mask=case_mask, training=False)
            theirs = keras_attention(query, value if name != "self" else query, case_mask)
            loss_ours, loss_theirs = tf.reduce_sum(ours * ours), tf.reduce_sum(theirs * theirs)
        np.testing.assert_allclose(ours, theirs, atol=2e-6, err_msg=name)
        pairs = [(got, want) for got, want in zip(tape.gradient(loss_ours, [query, value, *layer.trainable_weights]),
                                                  tape.gradient(loss_theirs, [query, value, *layer.trainable_weights]))
                 if want is not None]
        # float32 sums in another order: the tolerance follows the gradients' scale (the key bias's gradient is
        # zero in exact arithmetic, rounding noise here)
        scale = max(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(want)))) for _, want in pairs)
        for got, want in pairs:
            np.testing.assert_allclose(tf.convert_to_tensor(got), tf.convert_to_tensor(want), atol=1e-6 * scale, err_msg=name)
    half = SelfAttention(num_heads=4, key_dim=4, dropout=0.1, dtype="mixed_bfloat16")
    half.build(x.shape, x.shape)
    for mine, theirs in zip(half.weights, layer.weights):
        mine.assign(theirs)
    x16 = tf.cast(x, tf.bfloat16)
    out = half(x16, x16, attention_mask=mask, training=False)
    reference = keras.layers.MultiHeadAttention.call(half, x16, x16, attention_mask=mask, training=False)
    assert out.dtype == reference.dtype == tf.bfloat16
    out, reference = tf.cast(out, tf.float32), tf.cast(reference, tf.float32)  # 8-bit mantissas, summed differently
    np.testing.assert_allclose(out, reference, atol=0.02 * float(tf.reduce_max(tf.abs(reference))))
    plain = SelfAttention(num_heads=2, key_dim=8, dropout=0.1, use_bias=False)  # no biases to fuse
    plain.build(x.shape, x.shape)
    np.testing.assert_allclose(plain(x, x, attention_mask=mask, training=False),
                               keras.layers.MultiHeadAttention.call(plain, x, x, attention_mask=mask, training=False), atol=2e-6)
