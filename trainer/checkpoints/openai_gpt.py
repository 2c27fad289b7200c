"""OpenAI GPT-1 in the finetune-transformer-lm release layout: ``params_shapes.json`` + ``params_0..9.npy``.

The release stores all parameters flattened, concatenated and cut into ten files; ``params_shapes.json`` lists
the shapes in a fixed order: position embeddings [n_ctx, E], token embeddings [vocab, E], then per layer
``attn/c_attn/w`` [1, E, 3E] (query, key and value side by side), ``attn/c_attn/b``, ``attn/c_proj/w`` [1, E, E],
``attn/c_proj/b``, ``ln_1/g``, ``ln_1/b``, ``mlp/c_fc/w`` [1, E, 4E], ``mlp/c_fc/b``, ``mlp/c_proj/w`` [1, 4E, E],
``mlp/c_proj/b``, ``ln_2/g``, ``ln_2/b``. The release has no names; we name the tensors by that order
(``model/we_pos``, ``model/we_tok``, ``model/h{i}/...``) and map those names. The sizes come from a
``config.json`` beside the files (HF keys ``n_embd``, ``n_head``, ``n_layer``, ``n_positions``, ``vocab_size``)
or, without one, from the shapes and the release's 12 heads.

Token embedding rows beyond the release's vocabulary (the special tokens the GPT-1 encoder appends) keep their
initial values, as the original fine-tuning code initialised its special tokens randomly.
"""

from __future__ import annotations

import json
import os

import numpy as np

from trainer import fileio
from trainer.checkpoints.common import CheckpointError, ConversionReport, Target, apply_mapping
from trainer.model.backbone import Transformer
from trainer.model.config import OPENAI_GPT, TransformerConfig
from trainer.tasks import CausalLM, TaskConfig
from trainer.tasks.model import build_model

LM_HEAD = "causal_lm"
LAYER_PARTS = (
    "attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b", "ln_1/g", "ln_1/b",
    "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b", "ln_2/g", "ln_2/b",
)


def read_release(folder: str) -> dict[str, np.ndarray]:
    """The ten ``.npy`` pieces, re-joined and cut by ``params_shapes.json``, under our names for the order."""
    shapes_file = os.path.join(folder, "params_shapes.json")
    if not fileio.exists(shapes_file):
        raise CheckpointError(f"{shapes_file}: file not found (not a finetune-transformer-lm release folder)")
    try:
        shapes = [tuple(s) for s in json.loads(fileio.read_text(shapes_file))]
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{shapes_file}: not a JSON list of shapes ({err})") from None
    if len(shapes) < 2 or (len(shapes) - 2) % len(LAYER_PARTS):
        raise CheckpointError(f"{shapes_file}: {len(shapes)} shapes is not 2 + 12 per layer")
    pieces = []
    for n in range(10):
        path = os.path.join(folder, f"params_{n}.npy")
        if not fileio.exists(path):
            raise CheckpointError(f"{path}: file not found")
        try:
            pieces.append(np.load(path, allow_pickle=False).reshape(-1))
        except (ValueError, OSError, EOFError) as err:
            raise CheckpointError(f"{path}: not a readable .npy file ({err})") from None
    flat = np.concatenate(pieces)
    sizes = [int(np.prod(s)) for s in shapes]
    if flat.size != sum(sizes):
        raise CheckpointError(
            f"{folder}: params_*.npy hold {flat.size} values, params_shapes.json describes {sum(sizes)}"
        )
    names = ["model/we_pos", "model/we_tok"] + [
        f"model/h{layer}/{part}" for layer in range((len(shapes) - 2) // len(LAYER_PARTS)) for part in LAYER_PARTS
    ]
    offsets = np.cumsum([0, *sizes])
    return {name: flat[a:b].reshape(shape) for name, a, b, shape in zip(names, offsets[:-1], offsets[1:], shapes)}


def config_for(folder: str, tensors: dict[str, np.ndarray], vocab_size: int | None) -> TransformerConfig:
    config_file = os.path.join(folder, "config.json")
    n_ctx, hidden = tensors["model/we_pos"].shape
    layers = (len(tensors) - 2) // len(LAYER_PARTS)
    data = json.loads(fileio.read_text(config_file)) if fileio.exists(config_file) else {}
    activation = {"gelu": "gelu_tanh", "relu": "relu"}.get(data.get("afn", "gelu"))
    if activation is None:
        raise CheckpointError(f"{config_file}: unsupported afn {data.get('afn')!r}")
    release_vocab = tensors["model/we_tok"].shape[0]
    if vocab_size is not None and vocab_size < release_vocab:
        raise CheckpointError(f"vocab_size {vocab_size} is smaller than the release's {release_vocab} tokens")
    return TransformerConfig(
        **{
            **OPENAI_GPT.to_dict(),
            "vocab_size": vocab_size or release_vocab, "hidden_size": hidden, "num_layers": layers,
            "num_heads": int(data.get("n_head", OPENAI_GPT.num_heads)), "intermediate_size": 4 * hidden,
            "max_positions": n_ctx, "activation": activation,
            "layer_norm_epsilon": float(data.get("layer_norm_epsilon", 1e-5)),
            "dropout": float(data.get("resid_pdrop", 0.1)), "attention_dropout": float(data.get("attn_pdrop", 0.1)),
        }
    ).validate()


def split_qkv(tensors: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """Replaces each fused ``c_attn`` weight/bias by its query, key and value parts (``.../q`` etc.)."""
    out = dict(tensors)
    for layer in range(layers):
        for kind in ("w", "b"):
            name = f"model/h{layer}/attn/c_attn/{kind}"
            fused = out.pop(name)
            for part, value in zip("qkv", np.split(fused, 3, axis=-1)):
                out[f"{name}/{part}"] = value
    return out


def table(config: TransformerConfig, release_vocab: int) -> dict[str, Target]:
    e, inner = config.hidden_size, config.intermediate_size
    t = {
        "model/we_pos": Target("position_embedding/embeddings", (config.max_positions, e)),
        "model/we_tok": Target("token_embedding/embeddings", (release_vocab, e)),
    }
    for n in range(config.num_layers):
        src, dst = f"model/h{n}", f"layer_{n}"
        for part, name in zip("qkv", ("query", "key", "value")):
            t[f"{src}/attn/c_attn/w/{part}"] = Target(f"{dst}/attention/{name}/kernel", (1, e, e))
            t[f"{src}/attn/c_attn/b/{part}"] = Target(f"{dst}/attention/{name}/bias", (e,))
        t[f"{src}/attn/c_proj/w"] = Target(f"{dst}/attention/attention_output/kernel", (1, e, e))
        t[f"{src}/attn/c_proj/b"] = Target(f"{dst}/attention/attention_output/bias", (e,))
        t[f"{src}/ln_1/g"] = Target(f"{dst}/attention_norm/gamma", (e,))
        t[f"{src}/ln_1/b"] = Target(f"{dst}/attention_norm/beta", (e,))
        t[f"{src}/mlp/c_fc/w"] = Target(f"{dst}/intermediate/kernel", (1, e, inner))
        t[f"{src}/mlp/c_fc/b"] = Target(f"{dst}/intermediate/bias", (inner,))
        t[f"{src}/mlp/c_proj/w"] = Target(f"{dst}/output/kernel", (1, inner, e))
        t[f"{src}/mlp/c_proj/b"] = Target(f"{dst}/output/bias", (e,))
        t[f"{src}/ln_2/g"] = Target(f"{dst}/output_norm/gamma", (e,))
        t[f"{src}/ln_2/b"] = Target(f"{dst}/output_norm/beta", (e,))
    return t


def load_openai_gpt(folder: str, vocab_size: int | None = None):
    """The release -> (our causal model with a tied LM head, config, report).

    ``vocab_size`` larger than the release's adds rows for appended special tokens."""
    tensors = read_release(folder)
    config = config_for(folder, tensors, vocab_size)
    release_vocab = tensors["model/we_tok"].shape[0]
    model = build_model(Transformer(config), [CausalLM(TaskConfig(name=LM_HEAD, kind=CausalLM.kind))])
    report = ConversionReport(source=folder, source_format="openai_gpt1_release")
    mapping = table(config, release_vocab)
    if config.vocab_size > release_vocab:
        # The release's rows are assigned into the head of a larger matrix: assign through a padded copy.
        weights = {w.path: w for w in model.weights}
        current = np.asarray(weights["token_embedding/embeddings"].numpy())
        current[:release_vocab] = tensors.pop("model/we_tok")
        tensors["model/we_tok"] = current
        mapping["model/we_tok"] = Target("token_embedding/embeddings", (config.vocab_size, config.hidden_size))
        report.notes.append(
            f"token_embedding rows {release_vocab}..{config.vocab_size - 1}: appended special tokens, initialised randomly"
        )
    apply_mapping(model, split_qkv(tensors, config.num_layers), mapping, {}, report)
    return model, config, report
