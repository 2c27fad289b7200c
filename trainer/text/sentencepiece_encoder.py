"""SentencePiece encoder: load a ``.model`` or train one (unigram or BPE) from corpus files.

Python path: the ``sentencepiece`` package. In-graph path: tensorflow-text's ``SentencepieceTokenizer`` on the
same serialized model, so both give the same ids. Models trained here reserve BERT-style special pieces with
fixed ids: 0 [PAD], 1 [UNK], 2 [CLS] (bos), 3 [SEP] (eos), 4 [MASK], then any user symbols. User symbols (and
[MASK]) written in the text are kept whole; control pieces ([PAD], [CLS], [SEP]) never come out of text.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sentencepiece as spm

from trainer import fileio
from trainer.text.base import EncoderError, SpecialTokens, TextEncoder

SENTENCEPIECE_FILE = "sentencepiece.model"
TRAINED_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[CLS]", "eos": "[SEP]", "mask": "[MASK]"}


class SentencePieceEncoder(TextEncoder):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, source: str = "<model>") -> None:
        super().__init__()
        if not model_proto:
            raise EncoderError(f"{source}: model file is empty")
        self._proto = bytes(model_proto)
        self.source = source
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._proto)
        except (RuntimeError, OSError) as err:
            raise EncoderError(f"{source}: not a valid SentencePiece model ({err})") from None
        self._graph = None

    @classmethod
    def from_file(cls, path: str) -> SentencePieceEncoder:
        if not fileio.exists(path):
            raise EncoderError(f"{path}: file not found")
        return cls(fileio.read_bytes(path), source=path)

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 0.9995,
        user_symbols: Sequence[str] = (),
        max_sentences: int = 1_000_000,
        seed: int = 0,
    ) -> SentencePieceEncoder:
        """Trains a model on ``sentences`` (one per item) with the fixed special pieces listed above."""
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                pad_id=0, pad_piece=TRAINED_SPECIALS["pad"],
                unk_id=1, unk_piece=TRAINED_SPECIALS["unk"],
                bos_id=2, bos_piece=TRAINED_SPECIALS["bos"],
                eos_id=3, eos_piece=TRAINED_SPECIALS["eos"],
                user_defined_symbols=[TRAINED_SPECIALS["mask"], *user_symbols],
                minloglevel=2,
            )
        except RuntimeError as err:
            raise EncoderError(f"SentencePiece training failed: {err}") from None
        return cls(model.getvalue(), source="<trained>")

    # --- contract ---------------------------------------------------------------------------------------
    def _piece(self, piece_id: int) -> tuple[str, int] | None:
        return (self._sp.IdToPiece(piece_id), piece_id) if piece_id >= 0 else None

    def _named(self, piece: str) -> tuple[str, int] | None:
        piece_id = self._sp.PieceToId(piece)
        return (piece, piece_id) if piece_id != self._sp.unk_id() or piece == self._sp.IdToPiece(piece_id) else None

    @property
    def special(self) -> SpecialTokens:
        start = self._piece(self._sp.bos_id())
        end = self._piece(self._sp.eos_id())
        return SpecialTokens(
            pad=self._piece(self._sp.pad_id()), unk=self._piece(self._sp.unk_id()), start=start, end=end,
            delimiter=end, mask=self._named(TRAINED_SPECIALS["mask"]),
        )

    @property
    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    def id_to_token(self, token_id: int) -> str:
        return self._sp.IdToPiece(int(token_id))

    def token_to_id(self, token: str) -> int | None:
        piece_id = self._sp.PieceToId(token)
        return None if piece_id == self._sp.unk_id() and token != self._sp.IdToPiece(piece_id) else piece_id

    def settings(self) -> dict[str, Any]:
        return {}  # the normalisation rules live inside the model proto, which the fingerprint hashes

    def asset_files(self) -> dict[str, bytes]:
        return {SENTENCEPIECE_FILE: self._proto}

    def _encode(self, text: str) -> list[int]:
        return self._sp.EncodeAsIds(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.DecodeIds([int(i) for i in ids])

    def tf_tokenizer(self):
        if self._graph is None:
            from trainer.text.graph import SentencePieceGraph  # noqa: PLC0415

            self._graph = SentencePieceGraph(self._proto)
        return self._graph


def iter_corpus_lines(paths: Sequence[str]) -> Iterator[str]:
    """Non-empty lines of UTF-8 text files (local or remote); invalid bytes are replaced."""
    from trainer.text.base import decode_utf8  # noqa: PLC0415

    for path in paths:
        if not fileio.exists(path):
            raise EncoderError(f"{path}: corpus file not found")
        text, _ = decode_utf8(fileio.read_bytes(path))
        for line in text.splitlines():
            if line.strip():
                yield line
