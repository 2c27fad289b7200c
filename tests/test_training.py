"""The trainer on real records: losses fall, fine-tuning learns, distribution and resumption give the same
weights as one uninterrupted single-device run, Google's records train, the export serves raw strings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from components.preprocessing.pretraining import PretrainingDataConfig
from components.preprocessing.pretraining import run as make_pretraining_records
from trainer.text.factory import EncoderConfig, build_encoder
from trainer.training.config import TrainConfig
from trainer.training.loop import train
from training_helpers import REPO, TINY, last_json, model_weights, run_trainer, write_kjv_corpus

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def pretraining_records(vocab, tmp_path_factory):
    """MLM + NSP records (max_seq_length 32, 5 predictions) from 60 KJV chapters, in two shards."""
    root = tmp_path_factory.mktemp("pretraining")
    corpus = write_kjv_corpus(root / "kjv.txt", 60)
    out = root / "records"
    make_pretraining_records(PretrainingDataConfig(
        inputs=(corpus,), output_dir=str(out), encoder=EncoderConfig(vocab_file=vocab), num_workers=1, num_shards=2,
        max_seq_length=32, max_predictions_per_seq=5, dupe_factor=1,
    ))
    return str(out)


def pretrain_args(records, out, steps=12, extra=()):
    return ["train", f"--output_dir={out}", f"--data.train={records}", "--data.global_batch_size=8",
            f"--steps={steps}", "--checkpoint_every=4", "--log_every=4", "--runtime.steps_per_loop=2",
            "--optimizer.learning_rate=2e-3", "--data.shuffle_buffer=64", *[f"--set={t}" for t in TINY], *extra]


@pytest.fixture(scope="module")
def single_device_run(pretraining_records, tmp_path_factory):
    """The reference: 12 steps on one device, no interruption."""
    out = tmp_path_factory.mktemp("single")
    proc = run_trainer(pretrain_args(pretraining_records, out))
    return out, last_json(proc.stdout)


def test_mlm_nsp_loss_falls_on_real_records(pretraining_records, tmp_path):
    config = TrainConfig.resolve(None, [
        f"output_dir={tmp_path}", f"data.train=[{pretraining_records}]", "data.global_batch_size=16", "steps=80",
        "log_every=20", "checkpoint_every=80", "optimizer.learning_rate=3e-3", "optimizer.warmup_steps=5",
        "export=false", *TINY,
    ])
    history = train(config)["history"]
    first, last = history[0], history[-1]
    assert last["loss/masked_lm"] < first["loss/masked_lm"] - 1.5, history
    assert last["loss/next_sentence"] < 0.75 and np.isfinite(last["loss/loss"])
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "training_config.yaml").exists()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "logs"))


def test_mirrored_two_cpu_devices_matches_single_device(single_device_run, pretraining_records, tmp_path):
    reference, reference_result = single_device_run
    proc = run_trainer(pretrain_args(pretraining_records, tmp_path, extra=["--runtime.cpu_devices=2"]))
    result = last_json(proc.stdout)
    assert result["strategy"] == "mirrored" and result["replicas"] == 2
    for ours, theirs in zip(model_weights(tmp_path), model_weights(reference)):
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    assert reference_result["strategy"] == "default"


def _free_ports(n):
    import socket  # noqa: PLC0415

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_on_localhost_matches_single_device(single_device_run, pretraining_records, tmp_path):
    reference, _ = single_device_run
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "trainer", *pretrain_args(pretraining_records, tmp_path)], cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TF_CONFIG": tf_config},
        ))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    result = last_json(outputs[0][0])
    assert result["strategy"] == "multi_worker" and result["replicas"] == 2
    for ours, theirs in zip(model_weights(tmp_path), model_weights(reference)):
        np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_kill_9_then_resume_continues_without_replaying_data(single_device_run, pretraining_records, tmp_path):
    reference, _ = single_device_run
    args = pretrain_args(pretraining_records, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # The checkpoint counts once CheckpointManager's state file names it (it is written after the ckpt files;
    # a kill in between rightly resumes from the previous checkpoint).
    state = tmp_path / "checkpoints" / "checkpoint"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if state.exists() and 'ckpt-4"' in state.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "metrics.json").exists()
    result = last_json(run_trainer(args).stdout)
    assert result["resumed_from_step"] >= 4 and result["step"] == 12
    # Same weights as the uninterrupted run: model, optimizer, step and input position were all restored
    # (replayed or skipped batches would change the weights).
    for ours, theirs in zip(model_weights(tmp_path), model_weights(reference)):
        np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_sigterm_checkpoints_and_stops(pretraining_records, tmp_path):
    args = pretrain_args(pretraining_records, tmp_path, steps=100000)
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "checkpoints" / "ckpt-4.index").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143
    result = last_json(out)
    assert result["preempted"] and 4 <= result["step"] < 100000
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith(f"ckpt-{result['step']}")


def test_google_records_train_without_conversion(tmp_path):
    config = TrainConfig.resolve(None, [
        f"output_dir={tmp_path}", f"data.train=[{os.path.join(DATA, 'google_cpd_sample.tfrecord')}]",
        "data.global_batch_size=8", "steps=4", "log_every=2", "export=false", *TINY,
    ])
    result = train(config)
    assert result["step"] == 4 and all(np.isfinite(h["loss/loss"]) for h in result["history"])
