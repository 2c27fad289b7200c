"""Checkpoint loaders: parity with third-party reference outputs (<= 1e-4), round trips, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from trainer.checkpoints import bert, openai_gpt
from trainer.checkpoints.common import CheckpointError
from trainer.checkpoints.convert import ConvertConfig, convert

DATA = os.path.join(os.path.dirname(__file__), "data")
TINY_BERT = os.path.join(DATA, "tiny_bert_tf1")
TINY_GPT = os.path.join(DATA, "tiny_openai_gpt")
TOLERANCE = 1e-4


def run_bert(model, ids, mask, segments):
    inputs = {"token_ids": ids, "segment_ids": segments, "padding_mask": mask, "attention_mask": None}
    if "masked_positions" in model.input:
        inputs["masked_positions"] = np.tile(np.arange(ids.shape[1], dtype="int32"), (ids.shape[0], 1))
    return {k: np.asarray(v) for k, v in model(inputs, training=False).items()}


def max_diff(ours, reference, real=None):
    if real is not None:
        ours, reference = ours[real], reference[real]
    return float(np.abs(ours - reference).max())


@pytest.mark.parametrize("checkpoint", ["bert_model.ckpt", "bert_model_with_optimizer.ckpt"])
def test_google_tf1_bert_parity(checkpoint):
    ref = np.load(os.path.join(TINY_BERT, "reference_outputs.npz"))
    model, config, report = bert.load_tf1(os.path.join(TINY_BERT, checkpoint), os.path.join(TINY_BERT, "bert_config.json"))
    real = ref["attention_mask"].astype(bool)
    out = run_bert(model, ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    assert max_diff(out["sequence_output"], ref["sequence_output"], real) <= TOLERANCE
    assert max_diff(out["masked_lm"], ref["mlm_logits"], real) <= TOLERANCE
    assert max_diff(out["pooled_output"], ref["pooled_output"]) <= TOLERANCE
    assert max_diff(out["next_sentence"], ref["nsp_logits"]) <= TOLERANCE
    assert len(report.mapped) == 46
    if "optimizer" in checkpoint:
        assert set(report.ignored.values()) == {"optimizer slot (Adam moments)", "optimizer step counter"}
        assert len(report.ignored) == 2 * 46 + 1


def test_google_tf1_bert_parity_with_tanh_gelu(tmp_path):
    config = json.load(open(os.path.join(TINY_BERT, "bert_config.json")))
    config["hidden_act"] = "gelu_new"
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    ref = np.load(os.path.join(TINY_BERT, "reference_outputs.npz"))
    model, tconfig, _ = bert.load_tf1(os.path.join(TINY_BERT, "bert_model.ckpt"), str(tmp_path / "bert_config.json"))
    assert tconfig.activation == "gelu_tanh"
    real = ref["attention_mask"].astype(bool)
    out = run_bert(model, ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    assert max_diff(out["sequence_output"], ref["sequence_output_tanh_gelu"], real) <= TOLERANCE
    assert max_diff(out["masked_lm"], ref["mlm_logits_tanh_gelu"], real) <= TOLERANCE
    assert max_diff(out["next_sentence"], ref["nsp_logits_tanh_gelu"]) <= TOLERANCE


def test_huggingface_minilm_parity(minilm_dir):
    ref = np.load(os.path.join(DATA, "minilm_reference.npz"))
    model, config, report = bert.load_huggingface(
        os.path.join(minilm_dir, "model.safetensors"), os.path.join(minilm_dir, "config.json")
    )
    assert (config.num_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    assert report.ignored == {"embeddings.position_ids": "buffer of position indices, not a weight"}
    real = ref["attention_mask"].astype(bool)
    out = run_bert(model, ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    assert max_diff(out["sequence_output"], ref["last_hidden_state"], real) <= TOLERANCE
    assert max_diff(out["pooled_output"], ref["pooler_output"]) <= TOLERANCE


def test_openai_gpt_parity():
    ref = np.load(os.path.join(TINY_GPT, "reference_outputs.npz"))
    model, config, report = openai_gpt.load_openai_gpt(TINY_GPT)
    assert config.causal and config.type_vocab_size == 0 and not config.pooler
    ids = ref["input_ids"]
    out = model({"token_ids": ids, "segment_ids": None, "padding_mask": np.ones_like(ids), "attention_mask": None})
    assert max_diff(np.asarray(out["sequence_output"]), ref["last_hidden_state"]) <= TOLERANCE
    assert max_diff(np.asarray(out["causal_lm"]), ref["lm_logits"]) <= TOLERANCE
    assert len(report.mapped) == 2 + 2 * 16  # 12 tensors a layer, the fused c_attn weight and bias split in three


def test_openai_gpt_appended_special_tokens_keep_release_rows():
    model, config, report = openai_gpt.load_openai_gpt(TINY_GPT, vocab_size=123)
    tensors = openai_gpt.read_release(TINY_GPT)
    table = np.asarray(model.get_layer("token_embedding").embeddings)
    np.testing.assert_array_equal(table[:120], tensors["model/we_tok"])
    assert table.shape == (123, 32) and "120..122" in report.notes[0]


@pytest.mark.parametrize("writer", ["tf1", "huggingface"])
def test_export_and_load_back_gives_same_outputs(writer, tmp_path):
    ref = np.load(os.path.join(TINY_BERT, "reference_outputs.npz"))
    model, config, _ = bert.load_tf1(os.path.join(TINY_BERT, "bert_model.ckpt"), os.path.join(TINY_BERT, "bert_config.json"))
    if writer == "tf1":
        prefix = bert.export_tf1(model, config, str(tmp_path))
        again, _, _ = bert.load_tf1(prefix, str(tmp_path / "bert_config.json"))
        original = bert.read_tf1(os.path.join(TINY_BERT, "bert_model.ckpt"))[0]
        written = bert.read_tf1(prefix)[0]
    else:
        path = bert.export_huggingface(model, config, str(tmp_path))
        again, _, _ = bert.load_huggingface(path, str(tmp_path / "config.json"))
        written = bert.read_safetensors(path)
        assert "bert.encoder.layer.1.attention.self.query.weight" in written and "cls.predictions.bias" in written
        original = None
    if original is not None:
        assert set(written) == set(original)
        for name in original:
            np.testing.assert_array_equal(written[name], original[name])
    args = (ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    a, b = run_bert(model, *args), run_bert(again, *args)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_convert_writes_model_encoder_report(minilm_dir, tmp_path):
    import keras

    out = tmp_path / "converted"
    report = convert(ConvertConfig(
        source=minilm_dir, output_dir=str(out), reference_outputs=os.path.join(DATA, "minilm_reference.npz")
    ))
    assert report.parity["round_trip_max_abs_diff"] == 0.0
    assert report.parity["sequence_output_max_abs_diff"] <= TOLERANCE
    assert sorted(os.listdir(out)) == ["_COMPLETE", "config.yaml", "conversion_report.json", "encoder", "model.keras"]
    assert json.load(open(out / "encoder" / "encoder.json"))["vocab_size"] == 30522
    model = keras.saving.load_model(str(out / "model.keras"), safe_mode=True)
    ref = np.load(os.path.join(DATA, "minilm_reference.npz"))
    real = ref["attention_mask"].astype(bool)
    outputs = run_bert(model, ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    assert max_diff(outputs["sequence_output"], ref["last_hidden_state"], real) <= TOLERANCE


def test_convert_command_fails_on_parity_and_writes_nothing(tmp_path):
    bad_reference = tmp_path / "ref.npz"
    ref = dict(np.load(os.path.join(TINY_GPT, "reference_outputs.npz")))
    ref["lm_logits"] = ref["lm_logits"] + 0.01
    np.savez(bad_reference, **ref)
    bertkeras = os.path.join(os.path.dirname(sys.executable), "bertkeras")
    result = subprocess.run(
        [bertkeras, "convert", "--source", TINY_GPT, "--output_dir", str(tmp_path / "out"),
         "--reference_outputs", str(bad_reference)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "causal_lm differs from the reference by 0.01" in result.stderr
    assert not (tmp_path / "out").exists()


def copy_tiny_bert(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(TINY_BERT, folder)
    return folder


def test_truncated_checkpoint_names_the_file(tmp_path):
    folder = copy_tiny_bert(tmp_path)
    data = folder / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="bert_model.ckpt: cannot read"):
        bert.load_tf1(str(folder / "bert_model.ckpt"), str(folder / "bert_config.json"))


def test_config_that_does_not_match_the_tensors_names_the_tensor(tmp_path):
    folder = copy_tiny_bert(tmp_path)
    config = json.load(open(folder / "bert_config.json"))
    config["intermediate_size"] = 48
    (folder / "bert_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tensor 'bert/encoder/layer_\d/(intermediate|output)/dense/\w+' has shape"):
        bert.load_tf1(str(folder / "bert_model.ckpt"), str(folder / "bert_config.json"))


def test_vocabulary_size_must_match_the_embedding(tmp_path):
    folder = copy_tiny_bert(tmp_path)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(100)]))
    with pytest.raises(CheckpointError, match=r"vocab.txt: 105 tokens, but the checkpoint's embedding has 120 rows"):
        convert(ConvertConfig(source=str(folder / "bert_model.ckpt"), output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_unknown_format_and_corrupt_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        convert(ConvertConfig(source=str(tmp_path), output_dir=str(tmp_path / "out")))
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="model.safetensors: not a valid safetensors file"):
        bert.read_safetensors(str(tmp_path / "model.safetensors"))
    gpt = tmp_path / "gpt"
    shutil.copytree(TINY_GPT, gpt)
    os.remove(gpt / "params_5.npy")
    with pytest.raises(CheckpointError, match="params_5.npy: file not found"):
        openai_gpt.read_release(str(gpt))


def test_unexpected_tensor_is_an_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    model, config, _ = bert.load_tf1(os.path.join(TINY_BERT, "bert_model.ckpt"), os.path.join(TINY_BERT, "bert_config.json"))
    path = bert.export_huggingface(model, config, str(tmp_path))
    tensors = load_file(path)
    tensors["bert.encoder.layer.0.attention.self.rotary"] = np.zeros(3, "float32")
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="neither mapped nor known to be ignorable.*rotary"):
        bert.load_huggingface(path, str(tmp_path / "config.json"))
