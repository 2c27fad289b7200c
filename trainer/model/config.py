"""Typed configuration of the transformer encoder (BERT or OpenAI GPT); heads are tasks (trainer.tasks)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import Config, option

Activation = Literal["gelu", "gelu_tanh", "relu"]


@dataclasses.dataclass(frozen=True)
class TransformerConfig(Config):
    """Sizes and options of the encoder; BERT and OpenAI GPT-1 are two settings of the same model."""

    vocab_size: int = option(30522, "rows of the token embedding (the decoder of LM heads is tied to it)")
    hidden_size: int = option(768, "width of every layer")
    num_layers: int = option(12, "transformer blocks")
    num_heads: int = option(12, "attention heads (hidden_size must divide evenly)")
    intermediate_size: int = option(3072, "width of the feed-forward layer")
    activation: Activation = option("gelu", "gelu (exact erf, BERT), gelu_tanh (GPT), relu")
    layer_norm_epsilon: float = option(1e-12, "BERT 1e-12, GPT 1e-5")
    embedding_layer_norm: bool = option(True, "layer norm after the embeddings (BERT yes, GPT no)")
    dropout: float = option(0.1, "dropout on embeddings, attention output and feed-forward output")
    attention_dropout: float = option(0.1, "dropout on attention probabilities")
    max_positions: int = option(512, "rows of the learned position embedding")
    type_vocab_size: int = option(2, "segment ids (0: no segment embedding, as GPT)")
    causal: bool = option(False, "each position attends only to itself and earlier positions (GPT)")
    pooler: bool = option(True, "BERT's pooler: dense + tanh on the first token -> pooled_output")
    initializer_range: float = option(0.02, "stddev of the truncated-normal initializer")

    def check(self) -> list[str]:
        errors = []
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
            if getattr(self, name) < 1:
                errors.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.num_heads >= 1 and self.hidden_size % self.num_heads:
            errors.append(f"num_heads: {self.num_heads} does not divide hidden_size {self.hidden_size}")
        if self.type_vocab_size < 0:
            errors.append(f"type_vocab_size: must be >= 0, got {self.type_vocab_size}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                errors.append(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        return errors


BERT_BASE = TransformerConfig()
OPENAI_GPT = TransformerConfig(
    vocab_size=40478, activation="gelu_tanh", layer_norm_epsilon=1e-5, embedding_layer_norm=False,
    max_positions=512, type_vocab_size=0, causal=True, pooler=False,
)
