"""BERT checkpoints: Google's TF1 format (``bert_config.json`` + ``bert_model.ckpt.*``) and Hugging Face
(``config.json`` + ``model.safetensors``, BertModel and BertForPreTraining names), in both directions.

One name table, in Google's names; Hugging Face names are derived from it (``/`` -> ``.``, ``kernel`` ->
``weight`` stored transposed, ``gamma``/``beta`` -> ``weight``/``bias``).
"""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

from trainer import fileio
from trainer.checkpoints.common import CheckpointError, ConversionReport, Target, apply_mapping, export_tensors
from trainer.model.backbone import Transformer
from trainer.model.config import TransformerConfig
from trainer.tasks import MaskedLM, NextSentence, Task, TaskConfig
from trainer.tasks.model import build_model

TF1_FORMAT = "google_tf1_bert"
HF_FORMAT = "huggingface_bert"
MLM_HEAD = "masked_lm"
NSP_HEAD = "next_sentence"
TF1_IGNORED = {
    r".*/adam_[mv]": "optimizer slot (Adam moments)",
    r"global_step": "optimizer step counter",
}
HF_IGNORED = {
    r"(bert\.)?embeddings\.position_ids": "buffer of position indices, not a weight",
    r"cls\.predictions\.decoder\.weight": "tied to the word embeddings",
    r"cls\.predictions\.decoder\.bias": "the same tensor as cls.predictions.bias",
}
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def config_from_json(data: dict, source: str) -> TransformerConfig:
    """Google's ``bert_config.json`` or HF's ``config.json`` -> our config."""
    try:
        activation = _ACTIVATIONS[data.get("hidden_act", "gelu")]
    except KeyError:
        raise CheckpointError(f"{source}: unsupported hidden_act {data.get('hidden_act')!r}") from None
    try:
        return TransformerConfig(
            vocab_size=int(data["vocab_size"]), hidden_size=int(data["hidden_size"]),
            num_layers=int(data["num_hidden_layers"]), num_heads=int(data["num_attention_heads"]),
            intermediate_size=int(data["intermediate_size"]), activation=activation,
            layer_norm_epsilon=float(data.get("layer_norm_eps", 1e-12)),
            dropout=float(data.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(data.get("attention_probs_dropout_prob", 0.1)),
            max_positions=int(data["max_position_embeddings"]), type_vocab_size=int(data.get("type_vocab_size", 2)),
            initializer_range=float(data.get("initializer_range", 0.02)),
        ).validate()
    except KeyError as err:
        raise CheckpointError(f"{source}: missing field {err.args[0]!r}") from None


def config_to_json(config: TransformerConfig) -> dict:
    act = {v: k for k, v in _ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[config.activation]
    return {
        "attention_probs_dropout_prob": config.attention_dropout, "hidden_act": act,
        "hidden_dropout_prob": config.dropout, "hidden_size": config.hidden_size,
        "initializer_range": config.initializer_range, "intermediate_size": config.intermediate_size,
        "layer_norm_eps": config.layer_norm_epsilon, "max_position_embeddings": config.max_positions,
        "num_attention_heads": config.num_heads, "num_hidden_layers": config.num_layers,
        "type_vocab_size": config.type_vocab_size, "vocab_size": config.vocab_size,
        "model_type": "bert", "architectures": ["BertForPreTraining"],
    }


def tf1_table(config: TransformerConfig, pooler: bool, mlm: bool, nsp: bool) -> dict[str, Target]:
    """Google's variable names -> our weights."""
    h, i_size = config.hidden_size, config.intermediate_size
    t = {
        "bert/embeddings/word_embeddings": Target("token_embedding/embeddings", (config.vocab_size, h)),
        "bert/embeddings/position_embeddings": Target("position_embedding/embeddings", (config.max_positions, h)),
        "bert/embeddings/LayerNorm/gamma": Target("embeddings_layer_norm/gamma", (h,)),
        "bert/embeddings/LayerNorm/beta": Target("embeddings_layer_norm/beta", (h,)),
    }
    if config.type_vocab_size:
        t["bert/embeddings/token_type_embeddings"] = Target("segment_embedding/embeddings", (config.type_vocab_size, h))
    for n in range(config.num_layers):
        src, dst = f"bert/encoder/layer_{n}", f"layer_{n}"
        for part in ("query", "key", "value"):
            t[f"{src}/attention/self/{part}/kernel"] = Target(f"{dst}/attention/{part}/kernel", (h, h))
            t[f"{src}/attention/self/{part}/bias"] = Target(f"{dst}/attention/{part}/bias", (h,))
        t[f"{src}/attention/output/dense/kernel"] = Target(f"{dst}/attention/attention_output/kernel", (h, h))
        t[f"{src}/attention/output/dense/bias"] = Target(f"{dst}/attention/attention_output/bias", (h,))
        t[f"{src}/attention/output/LayerNorm/gamma"] = Target(f"{dst}/attention_norm/gamma", (h,))
        t[f"{src}/attention/output/LayerNorm/beta"] = Target(f"{dst}/attention_norm/beta", (h,))
        t[f"{src}/intermediate/dense/kernel"] = Target(f"{dst}/intermediate/kernel", (h, i_size))
        t[f"{src}/intermediate/dense/bias"] = Target(f"{dst}/intermediate/bias", (i_size,))
        t[f"{src}/output/dense/kernel"] = Target(f"{dst}/output/kernel", (i_size, h))
        t[f"{src}/output/dense/bias"] = Target(f"{dst}/output/bias", (h,))
        t[f"{src}/output/LayerNorm/gamma"] = Target(f"{dst}/output_norm/gamma", (h,))
        t[f"{src}/output/LayerNorm/beta"] = Target(f"{dst}/output_norm/beta", (h,))
    if pooler:
        t["bert/pooler/dense/kernel"] = Target("pooler/kernel", (h, h))
        t["bert/pooler/dense/bias"] = Target("pooler/bias", (h,))
    if mlm:
        t["cls/predictions/transform/dense/kernel"] = Target(f"{MLM_HEAD}_transform/kernel", (h, h))
        t["cls/predictions/transform/dense/bias"] = Target(f"{MLM_HEAD}_transform/bias", (h,))
        t["cls/predictions/transform/LayerNorm/gamma"] = Target(f"{MLM_HEAD}_layer_norm/gamma", (h,))
        t["cls/predictions/transform/LayerNorm/beta"] = Target(f"{MLM_HEAD}_layer_norm/beta", (h,))
        t["cls/predictions/output_bias"] = Target(f"{MLM_HEAD}_output_bias/bias", (config.vocab_size,))
    if nsp:
        t["cls/seq_relationship/output_weights"] = Target(f"{NSP_HEAD}/kernel", (2, h), transpose=True)
        t["cls/seq_relationship/output_bias"] = Target(f"{NSP_HEAD}/bias", (2,))
    return t


def hf_name(tf1_name: str, prefix: str) -> tuple[str, bool]:
    """Google's name -> (HF name, whether HF stores the tensor transposed relative to Google)."""
    if tf1_name == "cls/predictions/output_bias":
        return "cls.predictions.bias", False
    if tf1_name == "cls/seq_relationship/output_weights":
        return "cls.seq_relationship.weight", False
    if tf1_name == "cls/seq_relationship/output_bias":
        return "cls.seq_relationship.bias", False
    name = tf1_name
    if name.startswith("bert/"):
        name = prefix + name[len("bert/"):]
    name = re.sub(r"layer_(\d+)", r"layer.\1", name).replace("/", ".")
    transposed = name.endswith(".kernel")
    name = re.sub(r"\.(kernel|gamma)$", ".weight", name)
    name = re.sub(r"\.beta$", ".bias", name)
    if name.endswith("_embeddings"):
        name += ".weight"
    return name, transposed


def hf_table(tf1: dict[str, Target], prefix: str) -> dict[str, Target]:
    table = {}
    for name, entry in tf1.items():
        hf, transposed = hf_name(name, prefix)
        shape = entry.source_shape[::-1] if transposed else entry.source_shape
        table[hf] = Target(entry.target, tuple(shape), transpose=entry.transpose != transposed)
    return table


# --- reading -------------------------------------------------------------------------------------------------
def _tf1_prefix(path: str) -> str:
    """A checkpoint prefix from a prefix or a folder holding exactly one (or ``bert_model.ckpt``)."""
    if fileio.exists(path + ".index"):
        return path
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "bert_model.ckpt.index")):
            return os.path.join(path, "bert_model.ckpt")
        found = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(found) == 1:
            return found[0][: -len(".index")]
        raise CheckpointError(f"{path}: expected one TF checkpoint (*.index) in the folder, found {len(found)}")
    raise CheckpointError(f"{path}: no TF checkpoint (no {path}.index)")


def read_tf1(path: str) -> tuple[dict[str, np.ndarray], str]:
    import tensorflow as tf  # noqa: PLC0415

    prefix = _tf1_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {name: reader.get_tensor(name) for name in names}, prefix
    except (tf.errors.OpError, ValueError, IndexError) as err:  # IndexError: a truncated data file
        raise CheckpointError(f"{prefix}: cannot read the TF checkpoint: {str(err).splitlines()[0]}") from None


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.numpy import load  # noqa: PLC0415

    if not fileio.exists(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        return dict(load(fileio.read_bytes(path)))
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None


def read_json(path: str) -> dict:
    if not fileio.exists(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(fileio.read_text(path))
    except ValueError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _heads(mlm: bool, nsp: bool) -> list[Task]:
    heads = []
    if mlm:
        heads.append(MaskedLM(TaskConfig(name=MLM_HEAD, kind=MaskedLM.kind)))
    if nsp:
        heads.append(NextSentence(TaskConfig(name=NSP_HEAD, kind=NextSentence.kind)))
    return heads


def _load(tensors, config, source, fmt, names: dict[str, str], ignored: dict[str, str], make_table):
    present = lambda key: names[key] in tensors  # noqa: E731
    pooler, mlm, nsp = present("pooler"), present("mlm"), present("nsp")
    config = TransformerConfig(**{**config.to_dict(), "pooler": pooler})
    model = build_model(Transformer(config), _heads(mlm, nsp))
    report = ConversionReport(source=source, source_format=fmt)
    apply_mapping(model, tensors, make_table(config, pooler, mlm, nsp), ignored, report)
    return model, config, report


def load_tf1(checkpoint: str, config_file: str):
    """Google's TF1 BERT -> (our model with the heads the checkpoint has, config, report)."""
    config = config_from_json(read_json(config_file), config_file)
    tensors, prefix = read_tf1(checkpoint)
    names = {"pooler": "bert/pooler/dense/kernel", "mlm": "cls/predictions/output_bias",
             "nsp": "cls/seq_relationship/output_weights"}
    return _load(tensors, config, prefix, TF1_FORMAT, names, TF1_IGNORED, tf1_table)


def load_huggingface(safetensors_file: str, config_file: str):
    """HF BertModel / BertForPreTraining safetensors -> (our model, config, report)."""
    config = config_from_json(read_json(config_file), config_file)
    tensors = read_safetensors(safetensors_file)
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    names = {"pooler": f"{prefix}pooler.dense.weight", "mlm": "cls.predictions.bias", "nsp": "cls.seq_relationship.weight"}
    return _load(
        tensors, config, safetensors_file, HF_FORMAT, names, HF_IGNORED,
        lambda c, p, m, n: hf_table(tf1_table(c, p, m, n), prefix),
    )


# --- writing -------------------------------------------------------------------------------------------------
def _export_table(model, config: TransformerConfig) -> dict[str, Target]:
    paths = {w.path for w in model.weights}
    return tf1_table(
        config, "pooler/kernel" in paths, f"{MLM_HEAD}_output_bias/bias" in paths, f"{NSP_HEAD}/kernel" in paths
    )


def export_tf1(model, config: TransformerConfig, folder: str) -> str:
    """Writes ``bert_config.json`` and ``bert_model.ckpt.*`` with Google's names; returns the prefix."""
    import tensorflow as tf  # noqa: PLC0415

    tensors = export_tensors(model, _export_table(model, config))
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, "bert_model.ckpt")
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )
    fileio.atomic_write_text(os.path.join(folder, "bert_config.json"), json.dumps(config_to_json(config), indent=2))
    return prefix


def export_huggingface(model, config: TransformerConfig, folder: str, prefix: str = "bert.") -> str:
    """Writes ``config.json`` and ``model.safetensors``: BertForPreTraining names (``prefix="bert."``) or
    BertModel names (``prefix=""``)."""
    from safetensors.numpy import save  # noqa: PLC0415

    tensors = export_tensors(model, hf_table(_export_table(model, config), prefix))
    path = os.path.join(folder, "model.safetensors")
    fileio.atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
    fileio.atomic_write_text(os.path.join(folder, "config.json"), json.dumps(config_to_json(config), indent=2))
    return path
