"""SentencePiece: training from corpus files, Python vs in-graph ids, and the sentencepiece package itself."""

import pytest
import sentencepiece as spm
import tensorflow as tf

from trainer.text.base import EncoderError
from components.preprocessing.vocabulary import VocabularyConfig, train_vocabulary
from trainer.text.factory import EncoderConfig, build_encoder, load_encoder
from trainer.text.sentencepiece_encoder import SentencePieceEncoder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, kjv):
    path = tmp_path_factory.mktemp("corpus") / "kjv.txt"
    path.write_text("\n".join(kjv[::4]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def trained(request, corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"spm_{request.param}")
    encoder = SentencePieceEncoder.train(
        open(corpus_file, encoding="utf-8").read().splitlines(), vocab_size=800, model_type=request.param,
        character_coverage=1.0, user_symbols=("<sep2>",),
    )
    encoder.save(str(out))
    return encoder, out


def test_trained_model_has_fixed_special_ids(trained):
    encoder, _ = trained
    special = encoder.special
    assert special.pad == ("[PAD]", 0) and special.unk == ("[UNK]", 1)
    assert special.start == ("[CLS]", 2) and special.end == ("[SEP]", 3) and special.mask == ("[MASK]", 4)
    assert encoder.token_to_id("<sep2>") == 5
    assert encoder.vocab_size == 800
    assert encoder.encode("a [MASK] b <sep2>").count(4) == 1  # user symbols stay whole


def test_python_graph_and_sentencepiece_package_agree(trained, kjv):
    encoder, out = trained
    reference = spm.SentencePieceProcessor(model_file=str(out / "sentencepiece.model"))
    texts = kjv[1::7] + ["", "Ünïcödé ßtraße 東京", "tabs\tand  spaces "]
    python_ids = [encoder.encode(t) for t in texts]
    assert python_ids == reference.encode(texts)
    assert encoder.encode_batch(texts) == python_ids


def test_round_trip(trained, kjv):
    encoder, _ = trained
    for text in kjv[:500]:
        assert encoder.decode(encoder.encode(text)) == " ".join(text.split())


def test_saved_folder_loads_with_same_fingerprint(trained, tmp_path):
    encoder, out = trained
    loaded = load_encoder(str(out))
    assert loaded.fingerprint == encoder.fingerprint
    from_config = build_encoder(EncoderConfig(kind="sentencepiece", vocab_file=str(out / "sentencepiece.model")))
    assert from_config.fingerprint == encoder.fingerprint


def test_graph_path_in_saved_model(trained, kjv, tmp_path):
    encoder, _ = trained
    tf.saved_model.save(encoder.tf_tokenizer(), str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert loaded(tf.constant(kjv[:16])).to_list() == [encoder.encode(t) for t in kjv[:16]]


def test_training_is_deterministic(corpus_file, tmp_path):
    def train(folder):
        return train_vocabulary(VocabularyConfig(
            kind="sentencepiece", inputs=(corpus_file,), output_dir=str(tmp_path / folder), vocab_size=300,
            max_lines=2000, seed=7,
        ))

    assert train("a").fingerprint == train("b").fingerprint


def test_bad_model_files(tmp_path):
    path = tmp_path / "bad.model"
    path.write_bytes(b"not a model")
    with pytest.raises(EncoderError, match="bad.model: not a valid SentencePiece model"):
        SentencePieceEncoder.from_file(str(path))
    path.write_bytes(b"")
    with pytest.raises(EncoderError, match="bad.model: model file is empty"):
        SentencePieceEncoder.from_file(str(path))
    with pytest.raises(EncoderError, match="missing.model: file not found"):
        SentencePieceEncoder.from_file(str(tmp_path / "missing.model"))
