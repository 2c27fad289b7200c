"""GPT-2 byte-level BPE against HF tokenizers, GPT-1 BPE against HF transformers' OpenAIGPTTokenizer,
on vocabularies trained in the test, and the in-graph path against the Python path."""

import pytest
import tensorflow as tf
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, trainers

import corpora
from trainer.text.base import EncoderError
from trainer.text.bpe import GPT1Encoder, GPT2Encoder

WHITESPACE_CASES = [
    "a  b", "a\n\n b", "a \n b", "trailing   ", "  leading", "tab\there", "x\t\t y", "ideographic\u3000\u3000space",
    "nul\x00byte", "it's we've I'll they'd", " 's", "\n", "", "   ", "mixed 123abc ¡¿ 😀 東京", "a\u00a0b\u2028c",
]


def sample_texts(kjv):
    translations = [t for t in corpora.iso_codes_translations() if not t.isascii()]
    return kjv[::10] + corpora.stdlib_docstring_lines()[::4] + translations[::60] + WHITESPACE_CASES


@pytest.fixture(scope="module")
def training_text(kjv):
    translations = corpora.iso_codes_translations()
    return kjv[::3] + translations[::20]


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory, training_text):
    folder = tmp_path_factory.mktemp("gpt2")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(training_text, vocab_size=3000, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok.save_model(str(folder))
    return str(folder / "vocab.json"), str(folder / "merges.txt")


@pytest.fixture(scope="module")
def gpt1_files(tmp_path_factory, training_text):
    folder = tmp_path_factory.mktemp("gpt1")
    tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        training_text, trainers.BpeTrainer(vocab_size=3000, special_tokens=["<unk>"], end_of_word_suffix="</w>")
    )
    tok.model.save(str(folder))
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def test_gpt2_matches_hf_and_graph(gpt2_files, kjv):
    encoder = GPT2Encoder.from_files(*gpt2_files)
    reference = ByteLevelBPETokenizer(*gpt2_files)
    reference.add_special_tokens(["<|endoftext|>"])
    texts = sample_texts(kjv) + ["before<|endoftext|>after"]
    python_ids = [encoder.encode(t) for t in texts]
    expected = [e.ids for e in reference.encode_batch(texts)]
    assert [t for t, a, b in zip(texts, python_ids, expected) if a != b] == []
    graph_ids = encoder.encode_batch(texts)
    assert [t for t, a, b in zip(texts, python_ids, graph_ids) if a != b] == []
    assert len(texts) > 5000


def test_gpt2_round_trip_is_exact(gpt2_files, kjv):
    encoder = GPT2Encoder.from_files(*gpt2_files)
    for text in kjv[:500] + WHITESPACE_CASES:
        assert encoder.decode(encoder.encode(text)) == text
    assert encoder.special.end == ("<|endoftext|>", encoder.token_to_id("<|endoftext|>"))
    assert encoder.special.pad[1] == encoder.vocab_size - 2 and encoder.special.mask[1] == encoder.vocab_size - 1


def test_gpt1_matches_hf_openai_tokenizer_and_graph(gpt1_files, kjv):
    from transformers import OpenAIGPTTokenizer

    encoder = GPT1Encoder.from_files(*gpt1_files)
    assert encoder.pretokenizer == "bert_basic"  # spaCy/ftfy are not installed: HF falls back the same way
    reference = OpenAIGPTTokenizer(*gpt1_files)
    texts = [t for t in sample_texts(kjv) if "\x00" not in t]
    python_ids = [encoder.encode(t) for t in texts]
    expected = [reference.convert_tokens_to_ids(reference.tokenize(t)) for t in texts]
    assert [t for t, a, b in zip(texts, python_ids, expected) if a != b] == []
    graph_ids = encoder.encode_batch(texts + ["nul\x00byte _start_ x"])
    assert [t for t, a, b in zip(texts, python_ids, graph_ids) if a != b] == []
    assert graph_ids[-1] == encoder.encode("nul\x00byte _start_ x")


def test_gpt1_specials_are_appended_with_fixed_ids(gpt1_files):
    encoder = GPT1Encoder.from_files(*gpt1_files)
    n = len(encoder.source_vocab())
    special = encoder.special
    assert special.start == ("_start_", n)
    assert special.delimiter == ("_delimiter_", n + 1)
    assert special.end == ("_classify_", n + 2)
    assert special.unk == ("<unk>", 0)  # present in the trained vocabulary, so not appended
    assert encoder.encode("a _delimiter_ b")[1] == n + 1


def test_gpt1_round_trip(gpt1_files, kjv):
    encoder = GPT1Encoder.from_files(*gpt1_files)
    unk = encoder.special.id("unk")
    for text in kjv[:300]:
        ids = encoder.encode(text)
        if unk not in ids:
            assert encoder.decode(ids) == encoder.normalize(text)


def test_bpe_graph_in_saved_model(gpt2_files, kjv, tmp_path):
    encoder = GPT2Encoder.from_files(*gpt2_files)
    tf.saved_model.save(encoder.tf_tokenizer(), str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert loaded(tf.constant(kjv[:20])).to_list() == [encoder.encode(t) for t in kjv[:20]]


@pytest.mark.parametrize(
    "vocab, merges, message",
    [
        ('{"a": 0, "b": 1}', "#version: 0.2\na b c\n", "line 2: expected two symbols"),
        ('{"a": 0, "b": 1}', "", "file is empty"),
        ('{"a": 0, "b": 3}', "#version: 0.2\na b\n", "without gaps"),
        ('{"a": 0,', "#version: 0.2\na b\n", "line 1: not valid JSON"),
    ],
)
def test_bad_bpe_files(tmp_path, vocab, merges, message):
    (tmp_path / "encoder.json").write_text(vocab)
    (tmp_path / "vocab.bpe").write_text(merges)
    with pytest.raises(EncoderError, match=message):
        GPT2Encoder.from_files(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))
