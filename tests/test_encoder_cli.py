"""The encoder factory, saved encoder folders, and the `bertkeras encoder` commands (run as a user would)."""

import json
import os
import subprocess
import sys

import pytest

from trainer.text.base import EncoderError
from trainer.text.factory import EncoderConfig, build_encoder, load_encoder

BERTKERAS = os.path.join(os.path.dirname(sys.executable), "bertkeras")


def run_cli(*args, stdin=None):
    return subprocess.run([BERTKERAS, *args], capture_output=True, input=stdin, timeout=300)


def test_encode_command_prints_ids_and_tokens(minilm_dir):
    vocab = os.path.join(minilm_dir, "vocab.txt")
    result = run_cli("encoder", "encode", "--vocab_file", vocab, "--tokens", "Hello, [MASK] wörld!")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["tokens"] == ["hello", ",", "[MASK]", "world", "!"]
    assert record["ids"] == [7592, 1010, 103, 2088, 999]


def test_encode_command_reads_stdin_and_reports_invalid_utf8(minilm_dir):
    vocab = os.path.join(minilm_dir, "vocab.txt")
    result = run_cli("encoder", "encode", "--vocab_file", vocab, "--input", "-", stdin=b"caf\xe9\n\nok\n")
    assert result.returncode == 0, result.stderr
    encoder = build_encoder(EncoderConfig(vocab_file=vocab))
    expected = [encoder.encode("caf"), [], encoder.encode("ok")]  # the invalid byte is replaced, then dropped
    assert [json.loads(line)["ids"] for line in result.stdout.splitlines()] == expected
    assert b"replaced 1 invalid UTF-8 sequence" in result.stderr


def test_save_command_writes_assets_config_and_fingerprint(minilm_dir, tmp_path):
    out = tmp_path / "enc"
    vocab = os.path.join(minilm_dir, "vocab.txt")
    result = run_cli("encoder", "save", "--vocab_file", vocab, "--set", "lower_case=true", "--output", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(os.listdir(out)) == ["config.yaml", "encoder.json", "vocab.txt"]
    loaded = load_encoder(str(out))
    assert loaded.fingerprint == summary["fingerprint"] == build_encoder(EncoderConfig(vocab_file=vocab)).fingerprint
    cased = build_encoder(EncoderConfig(vocab_file=vocab, lower_case=False))
    assert cased.fingerprint != loaded.fingerprint  # settings are part of the fingerprint


def test_tampered_assets_fail_the_fingerprint_check(minilm_dir, tmp_path):
    encoder = build_encoder(EncoderConfig(vocab_file=os.path.join(minilm_dir, "vocab.txt")))
    encoder.save(str(tmp_path))
    with open(tmp_path / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("zzqxjv\n")  # a new token: the file is valid, but not the one described
    with pytest.raises(EncoderError, match="fingerprint"):
        load_encoder(str(tmp_path))


def test_cli_errors_name_the_flag_and_exit_2(tmp_path):
    result = run_cli("encoder", "encode", "--kind", "bogus", "x")
    assert result.returncode == 2
    assert b"--kind: field 'kind' must be one of" in result.stderr
    result = run_cli("encoder", "encode", "--vocab_file", str(tmp_path / "none.txt"), "x")
    assert result.returncode == 2 and b"none.txt: file not found" in result.stderr
    result = run_cli("encoder", "encode", "--kind", "gpt2_bpe", "--vocab_file", "e.json", "x")
    assert result.returncode == 2 and b"merges_file: required for kind=gpt2_bpe" in result.stderr


def test_configuration_reference_is_up_to_date():
    from pipelines.cli import configuration_reference

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == configuration_reference(), "run: .venv/bin/bertkeras config-docs --output docs/configuration.md"
