"""No silent loss in training, export and checkpoints: a resumed run must match its saved config (or the user
says fresh/override), a finished run says so and keeps its history, missing shards and non-finite numbers are
named errors, exports are published whole and readers refuse incomplete ones, outputs get the umask's mode,
checkpoints convert from gs:// (a real GCS emulator on loopback), registry names cannot climb out."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from trainer import features, fileio
from trainer.config import ConfigError
from trainer.features import DataError
from trainer.training.config import DataConfig, OptimizerConfig, TrainConfig, TrainingError
from trainer.training.loop import train
from training_helpers import REPO, last_json, run_trainer

DATA = os.path.join(os.path.dirname(__file__), "data")
TINY_BERT = os.path.join(DATA, "tiny_bert_tf1")
# Synthetic records and a tiny model: a few seconds a run.
TINY_RUN = ["data.synthetic=true", "data.synthetic_seq_length=16", "data.synthetic_predictions=3",
            "data.global_batch_size=4", "log_every=2", "checkpoint_every=2", "runtime.steps_per_loop=2",
            "runtime.xla=false", "export=false", "model.vocab_size=50", "model.hidden_size=16", "model.num_layers=1",
            "model.num_heads=2", "model.intermediate_size=32", "model.max_positions=16"]


def tiny_config(out, *extra) -> TrainConfig:
    return TrainConfig.resolve(None, [f"output_dir={out}", "steps=4", *TINY_RUN, *extra])


def snapshot(folder, *names) -> dict:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step run (checkpoints at 2 and 4, metrics.json with its history)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = train(tiny_config(out))
    assert result["step"] == 4 and [h["step"] for h in result["history"]] == [2, 4]
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


# --- 1. resuming a run -------------------------------------------------------------------------------------------
def test_resume_under_another_config_is_refused_naming_every_field(run_copy):
    before = snapshot(run_copy, features.TRAINING_CONFIG_FILE, features.METRICS_FILE)
    with pytest.raises(TrainingError) as refused:
        train(tiny_config(run_copy, "model.hidden_size=32", "optimizer.learning_rate=0.01", "seed=3"))
    message = str(refused.value)
    for change in ("model.hidden_size: 16 -> 32", "optimizer.learning_rate: 0.0001 -> 0.01", "seed: 0 -> 3"):
        assert change in message, message
    assert "on_existing=fresh" in message and "on_existing=override" in message
    assert snapshot(run_copy, features.TRAINING_CONFIG_FILE, features.METRICS_FILE) == before
    # A run whose config is gone cannot be checked: refused too (its checkpoints are still there).
    os.remove(run_copy / features.TRAINING_CONFIG_FILE)
    with pytest.raises(TrainingError, match="no training_config.yaml to compare"):
        train(tiny_config(run_copy))


def test_train_command_exits_non_zero_on_a_config_mismatch(run_copy):
    args = ["train", f"--output_dir={run_copy}", "--steps=4", *[f"--set={a}" for a in TINY_RUN],
            "--set=model.hidden_size=32"]
    proc = run_trainer(args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.hidden_size: 16 -> 32" in proc.stderr
    assert yaml.safe_load((run_copy / features.TRAINING_CONFIG_FILE).read_text())["model"]["hidden_size"] == 16


def test_a_finished_run_with_the_same_config_says_so_and_keeps_its_history(run_copy, caplog):
    before = snapshot(run_copy, features.TRAINING_CONFIG_FILE, features.METRICS_FILE)
    history = json.loads(before[features.METRICS_FILE])["history"]
    with caplog.at_level(logging.WARNING, logger="bertkeras.train"):
        result = train(tiny_config(run_copy))
    assert result["already_complete"] is True and result["history"] == history
    assert "already complete (step 4 of 4)" in caplog.text
    assert snapshot(run_copy, features.TRAINING_CONFIG_FILE, features.METRICS_FILE) == before


def test_longer_steps_resume_and_keep_the_earlier_history(run_copy):
    result = train(tiny_config(run_copy, "steps=6"))
    assert result["resumed_from_step"] == 4 and result["step"] == 6
    assert [h["step"] for h in result["history"]] == [2, 4, 6]
    saved = json.loads((run_copy / features.METRICS_FILE).read_text())
    assert [h["step"] for h in saved["history"]] == [2, 4, 6]
    assert yaml.safe_load((run_copy / features.TRAINING_CONFIG_FILE).read_text())["steps"] == 6
    with pytest.raises(TrainingError, match="steps: 2 is below step 6, which the run"):
        train(tiny_config(run_copy, "steps=2"))


def test_fresh_moves_the_old_run_aside_and_starts_over(run_copy):
    before = snapshot(run_copy, features.TRAINING_CONFIG_FILE, features.METRICS_FILE)
    result = train(tiny_config(run_copy, "on_existing=fresh", "model.hidden_size=32"))
    assert result["resumed_from_step"] == 0 and [h["step"] for h in result["history"]] == [2, 4]
    moved = result["moved_aside"]
    assert os.path.basename(moved).startswith("run.previous-") and os.path.dirname(moved) == str(run_copy.parent)
    old = type(run_copy)(moved)
    assert snapshot(old, features.TRAINING_CONFIG_FILE, features.METRICS_FILE) == before
    assert tf.train.latest_checkpoint(str(old / features.CHECKPOINT_DIR)).endswith("ckpt-4")
    assert yaml.safe_load((run_copy / features.TRAINING_CONFIG_FILE).read_text())["model"]["hidden_size"] == 32


def test_override_continues_the_checkpoint_and_records_the_change(run_copy):
    old_config = (run_copy / features.TRAINING_CONFIG_FILE).read_bytes()
    result = train(tiny_config(run_copy, "on_existing=override", "optimizer.learning_rate=0.001", "steps=6"))
    assert result["resumed_from_step"] == 4 and result["step"] == 6
    record = {"at_step": 4, "changes": ["optimizer.learning_rate: 0.0001 -> 0.001"],
              "previous_config": str(run_copy / "training_config.step-4.yaml")}
    assert result["config_overrides"] == [record]
    assert json.loads((run_copy / features.METRICS_FILE).read_text())["config_overrides"] == [record]
    assert (run_copy / "training_config.step-4.yaml").read_bytes() == old_config
    assert yaml.safe_load((run_copy / features.TRAINING_CONFIG_FILE).read_text())["optimizer"]["learning_rate"] == 0.001


# --- 2. missing shards, non-finite numbers ------------------------------------------------------------------------
def _write_shard(path, count: int) -> None:
    ids = tf.train.Feature(int64_list=tf.train.Int64List(value=list(range(1, 10))))
    record = tf.train.Example(features=tf.train.Features(feature={"input_ids": ids, "input_mask": ids}))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            writer.write(record.SerializeToString())


def test_a_manifest_naming_a_missing_shard_is_a_data_error(tmp_path):
    from trainer.training.data import inspect_source, verify_shards  # noqa: PLC0415

    folder = tmp_path / "records"
    folder.mkdir()
    for name in ("b.tfrecord", "c.tfrecord"):
        _write_shard(folder / name, 3)
    manifest = folder / features.MANIFEST_FILE
    manifest.write_text(json.dumps({"shards": {"a.tfrecord": 3, "b.tfrecord": 3, "c.tfrecord": 3}}))
    with pytest.raises(DataError, match=re.escape(f"{manifest}: lists 1 shard(s) that are missing from {folder}: a.tfrecord")):
        inspect_source(str(folder))
    # A shard that disappears after the source was inspected: the check names it and the manifest.
    manifest.write_text(json.dumps({"shards": {"b.tfrecord": 3, "c.tfrecord": 3}}))
    source = inspect_source(str(folder))
    os.remove(folder / "c.tfrecord")
    with pytest.raises(DataError, match=re.escape(f"{folder / 'c.tfrecord'}: shard not found, which {manifest} lists")):
        verify_shards(source)


@pytest.mark.parametrize("assignment, field", [
    ("optimizer.learning_rate=nan", "optimizer.learning_rate"),
    ("optimizer.learning_rate=.inf", "optimizer.learning_rate"),
    ("data.train_weights=[1, -.inf]", "data.train_weights[1]"),
    ("tasks=[{name: m, kind: masked_lm, weight: {value: .nan}}]", "tasks[0].weight.value"),
])
def test_non_finite_numbers_are_refused_naming_the_field(assignment, field):
    with pytest.raises(ConfigError, match=re.escape(f"field '{field}' must be a finite number")):
        TrainConfig.resolve(None, ["output_dir=o", "data.synthetic=true", "data.train=[a, b]", assignment])


def test_non_finite_numbers_from_a_file_or_a_constructor_are_refused(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("output_dir: o\ndata: {synthetic: true}\noptimizer: {weight_decay: .nan}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: field 'optimizer.weight_decay' must be a finite number")):
        TrainConfig.resolve(str(path))
    with pytest.raises(ConfigError, match=re.escape("OptimizerConfig: field 'beta_1' must be a finite number, got nan")):
        OptimizerConfig(beta_1=float("nan"))  # refused when built, not only at validate()


# --- 3. exports published whole, readers refuse incomplete ones -------------------------------------------------
def _tiny_model(seed: int):
    import keras  # noqa: PLC0415

    from trainer.model.backbone import Transformer  # noqa: PLC0415
    from trainer.tasks import make_task  # noqa: PLC0415
    from trainer.training.data import Layout  # noqa: PLC0415
    from trainer.training.prepare import build_training_model  # noqa: PLC0415

    config = tiny_config("unused")
    keras.utils.set_random_seed(seed)
    layout = Layout(16, 3, tuple(make_task(t) for t in config.tasks))
    model, _ = build_training_model(config, layout.tasks, Transformer(config.model), None)
    return model, layout


def _encoder(folder) -> str:
    from trainer.text.factory import EncoderConfig, build_encoder  # noqa: PLC0415

    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]) + "\n")
    build_encoder(EncoderConfig(vocab_file=str(vocab))).save(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run folder with a complete export (model.keras, serving/, encoder/, the marker) of a tiny model."""
    from trainer.training.export import export_model  # noqa: PLC0415

    root = tmp_path_factory.mktemp("exported")
    encoder = _encoder(root / "encoder")
    run = root / "run"
    model, layout = _tiny_model(0)
    config = tiny_config(run)
    export_model(model, config, layout, encoder)
    return {"run": run, "encoder": encoder, "config": config, "layout": layout}


def test_an_export_is_published_whole_and_a_failed_one_changes_nothing(exported, tmp_path):
    from trainer.text.base import EncoderError  # noqa: PLC0415
    from trainer.training.export import export_model  # noqa: PLC0415

    run = tmp_path / "run"
    shutil.copytree(exported["run"], run)
    config = tiny_config(run)
    export = run / features.EXPORT_DIR
    listed = json.loads((export / features.COMPLETE_FILE).read_text())["files"]
    assert {"model.keras", "training_config.yaml", "serving/saved_model.pb", "encoder/encoder.json"} <= set(listed)
    before = {name: (export / name).read_bytes() for name in listed}
    # A second export fails half-way (the encoder assets are corrupt): the published export is untouched.
    broken = tmp_path / "broken_encoder"
    shutil.copytree(exported["encoder"], broken)
    (broken / features.ENCODER_FILE).write_text("{")
    other, _ = _tiny_model(1)
    with pytest.raises(EncoderError, match="malformed encoder description"):
        export_model(other, config, exported["layout"], str(broken))
    assert {name: (export / name).read_bytes() for name in listed} == before
    assert sorted(os.listdir(run)) == [features.EXPORT_DIR]  # no staging left behind
    # A reader polling the export while a new one replaces it always finds a complete folder.
    complete = {features.COMPLETE_FILE, "model.keras", "serving", "encoder", "training_config.yaml"}
    looks, incomplete, stop = [0], [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                names = set(os.listdir(export))
            except FileNotFoundError:
                names = set()
            looks[0] += 1
            if not complete <= names:
                incomplete.append(sorted(names))
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        export_model(other, config, exported["layout"], exported["encoder"])
    finally:
        stop.set()
        watcher.join()
    assert looks[0] > 10 and incomplete == []
    assert (export / "model.keras").read_bytes() != before["model.keras"]
    assert sorted(os.listdir(run)) == [features.EXPORT_DIR]


def test_readers_refuse_an_export_without_its_marker(exported, tmp_path):
    from components.pipeline_steps import model_folder, register_local  # noqa: PLC0415
    from trainer.model.saving import IncompleteModelError, load_model_folder, load_serving_model  # noqa: PLC0415
    from trainer.training.config import EvaluateConfig  # noqa: PLC0415
    from trainer.training.prepare import load_base_model  # noqa: PLC0415
    from trainer.training.runs import evaluate_run  # noqa: PLC0415

    run = tmp_path / "run"
    shutil.copytree(exported["run"], run)
    export = run / features.EXPORT_DIR
    assert model_folder(str(run)) == str(export)
    assert load_model_folder(str(export)).backbone is not None
    registered = register_local(str(run), str(tmp_path / "registry"), "tiny")
    assert os.path.exists(os.path.join(registered, features.COMPLETE_FILE))
    assert model_folder(registered) == registered  # a registered copy is complete too
    os.remove(export / features.COMPLETE_FILE)
    refusal = re.escape(f"{export}: not a complete model folder (no {features.COMPLETE_FILE} marker, though it "
                        f"holds training_config.yaml)")
    for read in (lambda: model_folder(str(run)), lambda: load_model_folder(str(export)),
                 lambda: load_serving_model(str(export)), lambda: load_base_model(str(export)),
                 lambda: evaluate_run(EvaluateConfig(model_dir=str(export))),
                 lambda: register_local(str(run), str(tmp_path / "registry"), "tiny")):
        with pytest.raises(IncompleteModelError, match=refusal):
            read()
    assert sorted(os.listdir(tmp_path / "registry" / "tiny")) == ["v1"]
    # A model folder assembled by hand (model.keras and encoder/, none of our writers' files) is read as it is.
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    shutil.copy(export / "model.keras", by_hand / "model.keras")
    shutil.copytree(export / "encoder", by_hand / "encoder")
    assert model_folder(str(by_hand)) == str(by_hand) and load_model_folder(str(by_hand)).backbone is not None
    with pytest.raises(IncompleteModelError, match=re.escape(f"{tmp_path / 'nothing'}: no such model folder")):
        model_folder(str(tmp_path / "nothing"))
    os.remove(export / features.TRAINING_CONFIG_FILE)  # a run's export/ is ours by its name alone
    with pytest.raises(IncompleteModelError, match=re.escape("(no _COMPLETE marker, though it is a training run's export)")):
        model_folder(str(run))


def test_a_folder_on_gcs_is_published_with_its_marker_last(gcs_emulator):
    from trainer.model.saving import IncompleteModelError, require_complete  # noqa: PLC0415

    gcs_emulator.create_bucket("runs")
    final, config_file = "gs://runs/r1/export", features.TRAINING_CONFIG_FILE

    def export(version: int, fail: bool = False):
        def build(staging):
            fileio.atomic_write_text(fileio.join(staging, config_file), f"v{version}")
            fileio.atomic_write_bytes(fileio.join(staging, "serving", "saved_model.pb"), b"pb%d" % version)
            if fail:
                raise OSError("disk full")
            return version
        return fileio.publish_folder(final, build, features.COMPLETE_FILE)

    assert export(1) == 1 and require_complete(final) == final
    assert fileio.list_files(final) == [features.COMPLETE_FILE, "serving/saved_model.pb", config_file]
    with pytest.raises(OSError, match="disk full"):
        export(2, fail=True)
    assert fileio.read_text(fileio.join(final, config_file)) == "v1" and not fileio.exists(final + ".partial")
    assert export(3) == 3 and fileio.read_bytes(fileio.join(final, "serving", "saved_model.pb")) == b"pb3"
    marker = json.loads(fileio.read_text(fileio.join(final, features.COMPLETE_FILE)))
    assert marker == {"files": ["serving/saved_model.pb", config_file]} and not fileio.exists(final + ".partial")
    fileio.remove(fileio.join(final, features.COMPLETE_FILE))
    with pytest.raises(IncompleteModelError, match=re.escape(f"{final}: not a complete model folder (no _COMPLETE "
                                                             f"marker, though it holds {config_file})")):
        require_complete(final)


# --- 4. file modes ----------------------------------------------------------------------------------------------
def test_written_files_get_the_mode_of_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = tmp_path / "config.yaml"
        tiny_config(tmp_path).save(str(path))
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
        os.umask(0o007)
        fileio.atomic_write_bytes(str(tmp_path / "b.bin"), b"x")
        assert oct(os.stat(tmp_path / "b.bin").st_mode & 0o777) == oct(0o660)
        os.chmod(path, 0o640)  # a replaced file keeps its mode, as open() would
        fileio.atomic_write_text(str(path), "again")
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o640) and path.read_text() == "again"
    finally:
        os.umask(previous)


# --- 5. checkpoints on GCS ----------------------------------------------------------------------------------------
def _upload(bucket, folder, prefix: str) -> None:
    for name in sorted(os.listdir(folder)):
        bucket.blob(f"{prefix}/{name}").upload_from_filename(os.path.join(folder, name))


def _huggingface_checkpoint(folder) -> str:
    """A tiny BertForPreTraining in Hugging Face's files (from the tiny TF1 test checkpoint) with a vocabulary."""
    from trainer.checkpoints import bert  # noqa: PLC0415

    model, config, _ = bert.load_tf1(os.path.join(TINY_BERT, "bert_model.ckpt"), os.path.join(TINY_BERT, "bert_config.json"))
    os.makedirs(folder)
    bert.export_huggingface(model, config, str(folder))
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                + [f"w{i}" for i in range(config.vocab_size - 5)]) + "\n")
    (folder / "pytorch_model.bin").write_bytes(b"not read by the converter")
    return str(folder)


def _weights(folder) -> list[np.ndarray]:
    from trainer.model.saving import load_model_folder  # noqa: PLC0415

    return [np.asarray(w) for w in load_model_folder(str(folder)).get_weights()]


def test_convert_reads_checkpoints_from_gcs(gcs_emulator, tmp_path):
    from trainer.checkpoints.common import CheckpointError  # noqa: PLC0415
    from trainer.checkpoints.convert import ConvertConfig, convert  # noqa: PLC0415

    local = _huggingface_checkpoint(tmp_path / "hf")
    bucket = gcs_emulator.create_bucket("checkpoints")
    _upload(bucket, local, "tiny/hf")
    _upload(bucket, TINY_BERT, "tiny/tf1")
    convert(ConvertConfig(source=local, output_dir=str(tmp_path / "from_local")))
    reference = _weights(tmp_path / "from_local")
    # The command line, from a gs:// folder (the emulator's address reaches the child through the environment).
    bertkeras = os.path.join(os.path.dirname(sys.executable), "bertkeras")
    proc = subprocess.run([bertkeras, "convert", "--source", "gs://checkpoints/tiny/hf", "--output_dir",
                           str(tmp_path / "from_gcs")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_json(proc.stdout)["mapped"] > 0
    out = tmp_path / "from_gcs"
    assert {features.COMPLETE_FILE, "model.keras", "encoder", "conversion_report.json"} <= set(os.listdir(out))
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["source"] == "gs://checkpoints/tiny/hf/model.safetensors"
    assert yaml.safe_load((out / "config.yaml").read_text())["source"] == "gs://checkpoints/tiny/hf"
    for ours, theirs in zip(_weights(out), reference, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    os.remove(out / features.COMPLETE_FILE)
    with pytest.raises(ValueError, match=re.escape("though it holds conversion_report.json")):
        _weights(out)
    # A safetensors file and a TF1 checkpoint prefix in a gs:// folder.
    report = convert(ConvertConfig(source="gs://checkpoints/tiny/hf/model.safetensors", output_dir=str(tmp_path / "file")))
    assert report.parity["round_trip_max_abs_diff"] == 0.0
    report = convert(ConvertConfig(source="gs://checkpoints/tiny/tf1/bert_model.ckpt", output_dir=str(tmp_path / "tf1")))
    assert report.source == "gs://checkpoints/tiny/tf1/bert_model.ckpt" and report.parity["round_trip_max_abs_diff"] == 0.0
    for ours, theirs in zip(_weights(tmp_path / "tf1"), reference, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(CheckpointError, match=re.escape("gs://checkpoints/tiny/nothing: not found")):
        convert(ConvertConfig(source="gs://checkpoints/tiny/nothing", output_dir=str(tmp_path / "none")))
    with pytest.raises(CheckpointError, match=re.escape("gs://checkpoints/tiny/tf1/bert_config.json: missing field")):
        bucket.blob("tiny/tf1/bert_config.json").upload_from_string(b"{}")
        convert(ConvertConfig(source="gs://checkpoints/tiny/tf1", output_dir=str(tmp_path / "bad")))
    assert not (tmp_path / "none").exists() and not (tmp_path / "bad").exists()


# --- 6. registry names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "..", ".", "a/b", "", "x\\..\\y", "/abs"])
def test_register_local_refuses_names_that_leave_the_registry(exported, tmp_path, name):
    from components.pipeline_steps import register_local  # noqa: PLC0415

    registry = tmp_path / "registry"
    with pytest.raises(ValueError, match=re.escape(f"model_display_name {name!r}: use letters, digits")):
        register_local(str(exported["run"]), str(registry), name)
    assert not os.path.exists(registry) and sorted(os.listdir(tmp_path)) == []


def test_register_local_accepts_plain_names(exported, tmp_path):
    from components.pipeline_steps import register_local  # noqa: PLC0415

    assert register_local(str(exported["run"]), str(tmp_path), "kjv-v2.1_b") == str(tmp_path / "kjv-v2.1_b" / "v1")


# --- evaluation sources are checked before the first step --------------------------------------------------------
def _causal_records(path, n=4, length=16):
    """Records with only input_ids / input_mask: no masked-LM or next-sentence targets."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            example = tf.train.Example(features=tf.train.Features(feature={
                name: tf.train.Feature(int64_list=tf.train.Int64List(value=[i + 1] * length))
                for name in (features.INPUT_IDS, features.INPUT_MASK)}))
            writer.write(example.SerializeToString())


@pytest.mark.parametrize("problem", ["lacks the tasks' features", "corrupt shard"])
def test_evaluation_sources_are_checked_before_the_first_step(tmp_path, problem):
    folder = tmp_path / "eval"
    folder.mkdir()
    if problem == "corrupt shard":  # Google's records (MLM + NSP at 128), the last one cut short
        data = open(os.path.join(DATA, "google_cpd_sample.tfrecord"), "rb").read()
        (folder / "part-0.tfrecord").write_bytes(data[:-7])
        config = tiny_config(tmp_path / "run", f"data.eval=[{folder}]", "data.verify_records=true",
                             "data.synthetic_seq_length=128", "data.synthetic_predictions=20",
                             "model.max_positions=128", "model.vocab_size=30522")
        expected = "part-0.tfrecord: corrupt TFRecord file"
    else:
        _causal_records(folder / "part-0.tfrecord")
        config = tiny_config(tmp_path / "run", f"data.eval=[{folder}]")
        expected = "data.eval: no source has the features of task"
    with pytest.raises(DataError, match=expected):
        train(config)
    assert not (tmp_path / "run" / features.CHECKPOINT_DIR).exists()  # refused before any training step
