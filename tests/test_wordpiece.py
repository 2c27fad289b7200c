"""WordPiece: Google's algorithm, checked against HF tokenizers and the in-graph path on real text."""

import os

import pytest
import tensorflow as tf
from tokenizers import Tokenizer

import corpora
from trainer.text.base import EncoderError
from trainer.text.wordpiece import WordPieceEncoder

# Hand-written edge cases and the tokens the original algorithm gives, pinned (a change is a regression).
# Each was checked against HF tokenizers (max 200 characters a word): identical except the final sigma.
EDGE_CASES = {
    "Café déjà vu — naïve façade": ["cafe", "de", "##ja", "vu", "—", "naive", "facade"],
    "Ångström İstanbul": ["ang", "##strom", "istanbul"],
    # Python's str.lower (Google's) uses the final sigma; HF's Rust lower-casing does not (see test below).
    "ΣΟΦΟΣ σοφός": ["σ", "##ο", "##φ", "##ος", "σ", "##ο", "##φ", "##ος"],
    "東京タワー中文": ["東", "京", "タ", "##ワ", "##ー", "中", "文"],
    "emoji 😀👍🏽 party🎉": ["em", "##oj", "##i", "[UNK]", "[UNK]"],
    "ligature ﬁne ﬂow": ["liga", "##ture", "ﬁ", "##ne", "ﬂ", "##ow"],
    "ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ１２３": ["[UNK]", "－", "[UNK]", "[UNK]"],
    "ctrl\x00a\x01b\x7fc\u200bd\ufeffe\u00adf": ["ct", "##rl", "##ab", "##cd", "##ef"],
    "tab\tnew\nline\r\nnbsp\u00a0thin\u2009ideo\u3000end": ["tab", "new", "line", "n", "##bs", "##p", "thin", "id", "##eo", "end"],
    "´quoted´": ["´", "##qu", "##oted", "##´"],
    "The [MASK] sat on the [MASK].": ["the", "[MASK]", "sat", "on", "the", "[MASK]", "."],
    "a[MASK]b [mask] [UNK]": ["a", "[MASK]", "b", "[", "mask", "]", "[UNK]"],
    "[CLS] a [SEP]": ["[CLS]", "a", "[SEP]"],
    "": [],
    "   \t\n": [],
    "\ufffd bad": ["bad"],
    "a\u0301e\u0308 combining": ["ae", "combining"],
    "hangul 한국어": ["hangul", "ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ", "##ᄋ", "##ᅥ"],
}


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return WordPieceEncoder.from_file(os.path.join(minilm_dir, "vocab.txt"))


@pytest.fixture(scope="module")
def hf(minilm_dir):
    tok = Tokenizer.from_file(os.path.join(minilm_dir, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    tok.model.max_input_chars_per_word = 200  # Google's limit (the file says 100)
    return tok


def hf_ids(hf, texts):
    return [e.ids[1:-1] for e in hf.encode_batch(texts)]  # drop the [CLS]/[SEP] HF adds


def real_lines(kjv):
    translations = [line for line in corpora.iso_codes_translations() if not line.isascii()]
    return kjv + corpora.stdlib_docstring_lines() + translations[:: max(1, len(translations) // 20000)]


def test_special_tokens_have_bert_ids(encoder):
    special = encoder.special
    assert (special.pad, special.unk, special.start, special.end, special.mask) == (
        ("[PAD]", 0), ("[UNK]", 100), ("[CLS]", 101), ("[SEP]", 102), ("[MASK]", 103)
    )
    assert encoder.vocab_size == 30522


@pytest.mark.parametrize("text", list(EDGE_CASES))
def test_edge_cases_python_and_graph(encoder, text):
    expected = EDGE_CASES[text]
    assert encoder.tokenize(text) == expected
    assert encoder.encode_batch([text]) == [encoder.encode(text)]


def test_real_text_matches_hf_and_graph(encoder, hf, kjv):
    lines = real_lines(kjv)
    assert len(lines) >= 60000
    non_ascii = [line for line in lines if not line.isascii()]
    assert len(non_ascii) >= 20000
    python_ids = [encoder.encode(line) for line in lines]
    graph_ids = encoder.encode_batch(lines)
    reference = hf_ids(hf, lines)
    graph_diff = [line for line, a, b in zip(lines, python_ids, graph_ids) if a != b]
    assert not graph_diff, graph_diff[:5]
    # HF lower-cases Greek capital sigma to σ even at a word end, Google's Python (str.lower) to ς.
    hf_diff = [line for line, a, b in zip(lines, python_ids, reference) if a != b and "Σ" not in line]
    assert not hf_diff, hf_diff[:5]
    assert sum(1 for line in lines if "Σ" in line) < len(lines) / 100


def test_final_sigma_is_the_only_hf_difference(encoder, hf):
    assert hf.encode("ΣΟΦΟΣ", add_special_tokens=False).tokens[-1] == "##σ"
    assert encoder.tokenize("ΣΟΦΟΣ")[-1] == "##ος"


def test_long_words_limit_counts_characters_in_python_and_bytes_in_graph(encoder):
    assert encoder.tokenize("x" * 201) == ["[UNK]"]
    assert encoder.tokenize("ab" * 100) != ["[UNK]"]  # 200 characters: still WordPieces
    assert encoder.encode_batch(["ab" * 100, "x" * 201]) == [encoder.encode("ab" * 100), encoder.encode("x" * 201)]
    cyrillic = "д" * 150  # 150 characters, 300 UTF-8 bytes: the documented difference
    assert encoder.tokenize(cyrillic) != ["[UNK]"]
    assert encoder.encode_batch([cyrillic]) == [[encoder.special.id("unk")]]


def test_split_special_tokens_follows_google(minilm_dir):
    enc = WordPieceEncoder.from_file(os.path.join(minilm_dir, "vocab.txt"), split_special_tokens=True)
    assert enc.tokenize("the [MASK].") == ["the", "[", "mask", "]", "."]
    assert enc.encode_batch(["the [MASK]."]) == [enc.encode("the [MASK].")]


def test_cased_vocabulary(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "W", "##orld", ",", "é"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    enc = WordPieceEncoder.from_file(str(path), lower_case=False)
    assert enc.tokenize("Hello, World é") == ["Hello", ",", "W", "##orld", "é"]
    assert enc.encode_batch(["Hello, World é"]) == [enc.encode("Hello, World é")]


def test_round_trip_on_real_text(encoder, kjv):
    unk = encoder.special.id("unk")
    checked = 0
    for line in kjv[:3000]:
        ids = encoder.encode(line)
        if unk not in ids:
            assert encoder.decode(ids) == encoder.normalize(line)
            checked += 1
    assert checked > 2900


def test_bytes_input_counts_invalid_utf8(encoder):
    before = encoder.invalid_utf8_sequences
    assert encoder.encode(b"caf\xe9 ok \xff\xfe") == encoder.encode("caf ok")
    assert encoder.invalid_utf8_sequences - before == 3  # \xe9, \xff and \xfe
    assert encoder.encode_batch([b"caf\xe9 ok \xff\xfe"]) == [encoder.encode("caf ok")]


def test_graph_path_in_tf_data_and_saved_model(encoder, kjv, tmp_path):
    lines = kjv[:64] + ["The [MASK] é"]
    expected = [encoder.encode(line) for line in lines]
    tokenizer = encoder.tf_tokenizer()
    dataset = tf.data.Dataset.from_tensor_slices(lines).batch(16).map(tokenizer)
    assert [row for batch in dataset for row in batch.to_list()] == expected

    tf.saved_model.save(tokenizer, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert loaded(tf.constant(lines)).to_list() == expected


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "file is empty"),
        ("[PAD]\n[CLS]\nhello\n", r"has no \[UNK\]"),
        ("[UNK]\nhello\nhello\n", "line 3: token 'hello' repeats line 2"),
        ("[UNK]\n\nhello\n", "line 2"),
        ("[UNK]\nhel lo\n", "line 2"),
    ],
)
def test_bad_vocabulary_files(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EncoderError, match=message) as err:
        WordPieceEncoder.from_file(str(path))
    assert str(path) in str(err.value)


def test_missing_and_non_utf8_vocabulary(tmp_path):
    with pytest.raises(EncoderError, match="file not found"):
        WordPieceEncoder.from_file(str(tmp_path / "nope.txt"))
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[UNK]\nok\n\xff\xfe\n")
    with pytest.raises(EncoderError, match=r"line 3 .*not valid UTF-8"):
        WordPieceEncoder.from_file(str(path))
