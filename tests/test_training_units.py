"""Schedules, metrics and the checks that refuse bad input before any training step."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from trainer.config import ConfigError
from trainer.training import data as data_lib
from trainer.training.config import ScheduleConfig, TaskConfig, TrainConfig, TrainingError
from trainer.tasks import make_task
from trainer.tasks.config import schedule_value_py
from trainer.tasks.metrics import bio_spans, macro_f1, span_f1
from trainer.training.optimizer import WarmupLinearDecay, make_optimizer

DATA = os.path.join(os.path.dirname(__file__), "data")
GOOGLE = os.path.join(DATA, "google_cpd_sample.tfrecord")
PRETRAINING = (TaskConfig(name="masked_lm", kind="masked_lm"), TaskConfig(name="next_sentence", kind="next_sentence"))


def test_schedules():
    linear = ScheduleConfig(kind="linear", value=1.0, end_value=0.0, start_step=10, end_step=20)
    assert [schedule_value_py(linear, s) for s in (0, 10, 15, 20, 99)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    step = ScheduleConfig(kind="step", value=0.0, end_value=2.0, start_step=5)
    assert [schedule_value_py(step, s) for s in (4, 5)] == [0.0, 2.0]
    cosine = ScheduleConfig(kind="cosine", value=0.0, end_value=1.0, start_step=0, end_step=100)
    assert schedule_value_py(cosine, 50) == pytest.approx(0.5) and schedule_value_py(cosine, 25) == pytest.approx(0.1464, abs=1e-4)
    with pytest.raises(ConfigError, match="end_step"):
        ScheduleConfig(kind="linear", start_step=3, end_step=3).validate()
    lr = WarmupLinearDecay(1.0, 10, 110, 0.0)
    assert [float(lr(s)) for s in (0, 5, 10, 60, 110, 200)] == pytest.approx([0, 0.5, 1.0, 0.5, 0.0, 0.0])


def test_masked_loss_is_weighted_mean_and_zero_without_weights():
    task = make_task(TaskConfig(name="t", kind="token", num_classes=2))
    logits = tf.constant([[[2.0, 0.0], [0.0, 2.0]]])
    batch = {"t_labels": tf.constant([[0, 0]]), "t_weights": tf.constant([[1.0, 0.0]])}
    loss = task.loss(logits, batch, task.weight_sum(batch))
    assert float(loss) == pytest.approx(float(tf.nn.softmax_cross_entropy_with_logits([1.0, 0.0], [2.0, 0.0])))
    zero = task.loss(logits, {"t_labels": batch["t_labels"], "t_weights": tf.zeros([1, 2])}, tf.constant(0.0))
    assert float(zero) == 0.0


def test_metrics():
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC", "I-PER"]) == {(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "PER")}
    scores = span_f1([["B-X", "I-X", "O", "B-Y"]], [["B-X", "I-X", "O", "O"]])
    assert scores["span_precision"] == 1.0 and scores["span_recall"] == 0.5 and scores["span_f1"] == pytest.approx(2 / 3)
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2) == pytest.approx((2 / 3 + 0.8) / 2)


def test_task_and_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"tasks: duplicate names"):
        TrainConfig(output_dir="o", tasks=(TaskConfig(name="a"), TaskConfig(name="a"))).validate()
    with pytest.raises(ConfigError, match=r"train_weights: 1 weights for 2 sources"):
        TrainConfig.resolve(None, ["output_dir=o", "data.train=[a, b]", "data.train_weights=[1]"])


def _check(specs, tasks=PRETRAINING, max_positions=512, fingerprint=None, verify=True):
    sources = [data_lib.inspect_source(s) for s in specs]
    return data_lib.check_sources(sources, [make_task(t) for t in tasks], max_positions, 30522, fingerprint, verify)


def test_google_records_give_the_layout():
    layout = _check([GOOGLE])
    assert (layout.seq_length, layout.predictions) == (128, 20)


def test_sequence_longer_than_the_model_is_refused():
    with pytest.raises(data_lib.DataError, match=r"google_cpd_sample.tfrecord: sequence length 128 exceeds the model's max_positions 64"):
        _check([GOOGLE], max_positions=64)


def test_task_missing_from_records_is_refused():
    with pytest.raises(data_lib.DataError, match=r"no source has the features of task 'sentiment' \(sentence\).*sentiment_labels"):
        _check([GOOGLE], tasks=(TaskConfig(name="sentiment", kind="sentence", num_classes=2),))


def test_corrupt_file_is_named(tmp_path):
    bad = tmp_path / "part-00001.tfrecord"
    data = open(GOOGLE, "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(data_lib.DataError, match=r"part-00001.tfrecord: corrupt TFRecord file"):
        _check([str(bad)])
    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"not a tfrecord at all, just text\n" * 4)
    with pytest.raises(data_lib.DataError, match="garbage.tfrecord"):
        _check([str(garbage)])


def test_empty_shards_are_skipped_and_all_empty_is_an_error(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "part-00000-of-00002.tfrecord").write_bytes(b"")
    (folder / "part-00001-of-00002.tfrecord").write_bytes(open(GOOGLE, "rb").read())
    source = data_lib.inspect_source(str(folder / "part-*"))
    assert source.kind == "pretraining" and len(source.files) == 2
    (folder / "part-00001-of-00002.tfrecord").write_bytes(b"")
    with pytest.raises(data_lib.DataError, match="2 shards from .*part-00000-of-00002.tfrecord: no records"):
        data_lib.inspect_source(str(folder / "part-*"))


def test_records_of_another_encoder_are_refused(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    shutil.copy(GOOGLE, folder / "pretraining-00000-of-00001.tfrecord")
    (folder / "manifest.json").write_text(json.dumps({
        "shards": {"pretraining-00000-of-00001.tfrecord": 50}, "encoder": {"fingerprint": "wordpiece-aaaa", "vocab_size": 30522}}))
    with pytest.raises(data_lib.DataError, match=r"manifest.json: records were made with encoder wordpiece-aaaa, the model's encoder is wordpiece-bbbb"):
        _check([str(folder)], fingerprint="wordpiece-bbbb")
    (folder / "manifest.json").write_text(json.dumps({"shards": {"pretraining-00000-of-00001.tfrecord": 49}}))
    with pytest.raises(data_lib.DataError, match=r"50 records, but the manifest lists 49"):
        _check([str(folder)])


def test_sources_of_different_lengths_are_refused(tmp_path):
    other = tmp_path / "short.tfrecord"
    with tf.io.TFRecordWriter(str(other)) as writer:
        feature = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "input_ids": feature([1] * 16), "input_mask": feature([1] * 16), "segment_ids": feature([0] * 16),
            "masked_lm_positions": feature([1] * 20), "masked_lm_ids": feature([1] * 20),
            "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * 20)),
            "next_sentence_labels": feature([0])})).SerializeToString())
    with pytest.raises(data_lib.DataError, match=r"sources disagree on the sequence length .*: 128, .*short.tfrecord: 16"):
        _check([GOOGLE, str(other)])


def test_one_run_moves_from_lm_pretraining_to_finetuning_by_schedule(tmp_path):
    """The seed's two phases as one run: the MLM weight ramps 1 -> 0 while the classifier's ramps 0 -> 1."""
    from trainer.training.loop import train  # noqa: PLC0415

    config = TrainConfig.resolve(None, [
        f"output_dir={tmp_path}", "data.synthetic=true", "data.synthetic_seq_length=16", "data.synthetic_predictions=3",
        "data.global_batch_size=4", "steps=20", "log_every=10", "runtime.steps_per_loop=1", "export=false",
        "model.vocab_size=50", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
        "model.intermediate_size=32", "model.max_positions=16",
        "tasks=[{name: masked_lm, kind: masked_lm, weight: {kind: linear, value: 1, end_value: 0, start_step: 0, end_step: 19}},"
        " {name: topic, kind: sentence, num_classes: 3, weight: {kind: linear, value: 0, end_value: 1, start_step: 0, end_step: 19}}]",
    ])
    history = train(config)["history"]
    assert [(h["weight/masked_lm"], h["weight/topic"]) for h in history] == [
        (round(1 - 10 / 19, 4), round(10 / 19, 4)), (0.0, 1.0)]
    last = history[-1]  # the last step (global step 19): only the classifier's loss counts
    assert last["loss/loss"] == pytest.approx(last["loss/topic"], rel=1e-4) and last["loss/masked_lm"] > 1.0


def _tiny_step(compile_update: bool, overrides=()):
    import keras  # noqa: PLC0415

    from trainer.model.backbone import Transformer  # noqa: PLC0415
    from trainer.training import optimizer as optimizer_lib  # noqa: PLC0415
    from trainer.training.prepare import build_training_model  # noqa: PLC0415
    from trainer.training.step import make_step  # noqa: PLC0415

    config = TrainConfig.resolve(None, [
        "output_dir=unused", "data.synthetic=true", "data.synthetic_seq_length=16", "data.synthetic_predictions=3",
        "data.global_batch_size=4",
        "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=32",
        "model.dropout=0", "model.attention_dropout=0", "steps=10", *overrides])
    keras.utils.set_random_seed(0)
    layout = data_lib.Layout(16, 3, tuple(make_task(t) for t in config.tasks))
    model, _ = build_training_model(config, layout.tasks, Transformer(config.model), None)
    optimizer = optimizer_lib.make_optimizer(config, "float32", model.trainable_variables,
                                             optimizer_lib.head_variables(model))
    optimizer.build(model.trainable_variables)
    batches = iter(data_lib.synthetic_dataset(layout, config.model.vocab_size, 0, 4, 0, 1, 0))
    step = make_step(model, optimizer, config, layout, "float32", compile_update)
    run = tf.function(lambda n: [step(next(batches)) for _ in range(n)])
    return model, run


@pytest.mark.parametrize("compiled", [False, True], ids=["keras apply", "compiled update"])
def test_layer_decay_gives_each_encoder_layer_its_learning_rate(compiled):
    """From the same weights and batch, one AdamW step with layer_decay 0.5 moves each weight by its layer's factor
    times what it moves without (the Adam step and the decoupled weight decay, lr x wd x w, alike): the top layer
    and the heads 1, each layer below half the one above, the embeddings below the first layer."""
    moves = []
    for decay in (1.0, 0.5):
        model, run = _tiny_step(compiled, ["model.num_layers=3", f"optimizer.layer_decay={decay}",
                                           "optimizer.weight_decay=0.1", "optimizer.learning_rate=1e-3"])
        before = [v.numpy() for v in model.trainable_variables]
        run(1)
        moves.append({v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before)})
    full, decayed = moves
    expected = {"layer_2/": 1.0, "layer_1/": 0.5, "layer_0/": 0.25, "token_embedding/": 0.125,
                "embeddings_layer_norm/": 0.125, "pooler/": 1.0, "masked_lm": 1.0}
    for part, factor in expected.items():
        paths = [p for p in full if part in p]
        assert paths, (part, sorted(full))
        for path in paths:
            # atol: float32 rounding of a weight near 0.02 (one ulp is 1.9e-9)
            np.testing.assert_allclose(decayed[path], factor * full[path], rtol=1e-3, atol=4e-9, err_msg=path)
    assert max(np.abs(full[p]).max() for p in full if "layer_0/" in p) > 1e-4  # the weights did move
    with pytest.raises(ConfigError, match=r"layer_decay: must be in \(0, 1\]"):
        TrainConfig.resolve(None, ["output_dir=o", "data.synthetic=true", "optimizer.layer_decay=0"])


@pytest.mark.parametrize("compiled", [False, True], ids=["keras apply", "compiled update"])
def test_head_learning_rate_multiplier_moves_only_the_heads_faster(compiled):
    """From the same weights and batch, one AdamW step with head_learning_rate_multiplier 4 and layer_decay 0.5
    moves every head weight (the masked-LM transform, norm and bias, the next-sentence classifier) 4 times as far
    as plain AdamW, weight decay included, and the backbone by its layer's factor: the top layer and the pooler 1,
    layer_0 0.5, the embeddings (the masked-LM decoder tied to them too) 0.25."""
    moves = []
    for multiplier, decay in ((1.0, 1.0), (4.0, 0.5)):
        model, run = _tiny_step(compiled, ["model.num_layers=2", f"optimizer.head_learning_rate_multiplier={multiplier}",
                                           f"optimizer.layer_decay={decay}", "optimizer.weight_decay=0.1",
                                           "optimizer.learning_rate=1e-3"])
        before = [v.numpy() for v in model.trainable_variables]
        run(1)
        moves.append({v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before)})
    plain, scaled = moves
    expected = {"masked_lm_": 4.0, "next_sentence/": 4.0, "layer_1/": 1.0, "pooler/": 1.0, "layer_0/": 0.5,
                "token_embedding/": 0.25, "position_embedding/": 0.25, "segment_embedding/": 0.25,
                "embeddings_layer_norm/": 0.25}
    for path in plain:
        factors = [f for part, f in expected.items() if path.startswith(part)]
        assert len(factors) == 1, (path, sorted(plain))
        # atol: one float32 ulp of a layer-norm gain near 1 (weight decay alone moves a kernel by ~2e-6)
        np.testing.assert_allclose(scaled[path], factors[0] * plain[path], rtol=1e-3, atol=1.2e-7, err_msg=path)
    assert max(np.abs(plain[p]).max() for p in plain if p.startswith("masked_lm_")) > 1e-4  # the heads did move
    with pytest.raises(ConfigError, match=r"head_learning_rate_multiplier: must be > 0"):
        TrainConfig.resolve(None, ["output_dir=o", "data.synthetic=true", "optimizer.head_learning_rate_multiplier=0"])
    config = TrainConfig.resolve(None, ["output_dir=o", "data.synthetic=true", "optimizer.head_learning_rate_multiplier=2"])
    with pytest.raises(TrainingError, match=r"head_learning_rate_multiplier: 2.0, but no head variables"):
        make_optimizer(config, "float32", model.trainable_variables)


def test_frozen_bottom_layers_keep_their_weights_and_the_rest_trains(tmp_path):
    """optimizer.freeze_layers=2 of 3: through the training loop, the embeddings and layer_0/1 end exactly as they
    started, layer_2, the pooler and the heads move; more layers than the backbone has is a clear error."""
    from trainer.model.backbone import Transformer  # noqa: PLC0415
    from trainer.training.loop import train  # noqa: PLC0415

    def config(out, layers):
        return TrainConfig.resolve(None, [
            f"output_dir={out}", "data.synthetic=true", "data.synthetic_seq_length=16", "data.synthetic_predictions=3",
            "data.global_batch_size=4", "steps=3", "log_every=3", "export=false", "model.vocab_size=50",
            "model.hidden_size=16", "model.num_layers=3", "model.num_heads=2", "model.intermediate_size=32",
            "model.max_positions=16", "optimizer.learning_rate=1e-2", f"optimizer.freeze_layers={layers}"])

    backbone = Transformer(config(tmp_path / "a", 2).model)
    before = {v.path: v.numpy() for v in backbone.weights}
    result = train(config(tmp_path / "a", 2), backbone=backbone)
    moved = {v.path: not np.array_equal(v.numpy(), before[v.path]) for v in backbone.weights}
    frozen = [p for p in moved if any(k in p for k in ("embedding", "layer_0/", "layer_1/"))]
    assert frozen and not any(moved[p] for p in frozen)
    trained = [p for p in moved if p not in frozen]
    assert any("layer_2/" in p for p in trained) and all(moved[p] for p in trained), trained
    assert result["frozen_weights"] == len(frozen)
    assert all(v.trainable for v in backbone.weights)  # the caller's model comes back as trainable as it went in
    with pytest.raises(TrainingError, match=r"optimizer.freeze_layers: 4, but the backbone has 3 encoder layers"):
        train(config(tmp_path / "b", 4), backbone=Transformer(config(tmp_path / "b", 4).model))
    with pytest.raises(TrainingError, match=r"freeze_layers: 2, but the run starts from random weights"):
        train(config(tmp_path / "c", 2))
    # its checkpoint's optimizer state covers the trainable weights only: another freeze count cannot continue it
    with pytest.raises(TrainingError, match=r"trained with optimizer.freeze_layers=2.*not even with on_existing=override"):
        train(dataclasses.replace(config(tmp_path / "a", 1), on_existing="override", steps=6),
              backbone=Transformer(config(tmp_path / "a", 1).model))


def test_compiled_update_equals_keras_apply_and_embedding_gradients_are_dense():
    weights = []
    for compiled in (False, True):
        model, run = _tiny_step(compiled)
        run(3)
        weights.append([v.numpy() for v in model.trainable_variables])
    for ours, keras_apply in zip(*weights):
        np.testing.assert_allclose(ours, keras_apply, atol=1e-7)
    # Adam's first step moves every weight with a non-zero gradient by the learning rate (m / sqrt(v) = sign(g)).
    # The segment embedding's gradient arrives as one row per token; summed before Adam, as BERT's dense Adam
    # does, row 0 (every token's segment) moves by exactly lr; squaring rows before summing would move it less.
    model, run = _tiny_step(True, ["optimizer.warmup_steps=0", "optimizer.weight_decay=0", "optimizer.clip_norm=0",
                              "optimizer.epsilon=1e-12"])
    segment = next(v for v in model.trainable_variables if "segment" in v.path)
    before = segment.numpy()
    run(1)
    np.testing.assert_allclose(np.abs(segment.numpy() - before)[0], 1e-4, rtol=1e-3)


def test_epochs_set_the_steps_from_the_records_of_every_source(tmp_path):
    from trainer.training.loop import steps_from_epochs  # noqa: PLC0415

    folder = tmp_path / "records"
    folder.mkdir()
    shutil.copy(GOOGLE, folder / "pretraining-00000-of-00001.tfrecord")
    (folder / "manifest.json").write_text(json.dumps({"shards": {"pretraining-00000-of-00001.tfrecord": 50}, "records": 50}))
    glob = str(tmp_path / "loose-*.tfrecord")  # no manifest: counted by reading
    shutil.copy(GOOGLE, tmp_path / "loose-0.tfrecord")
    config = TrainConfig.resolve(None, ["output_dir=o", f"data.train=[{folder}, {glob}]", "data.global_batch_size=8",
                                        "epochs=1.5", "steps=7"])
    assert steps_from_epochs(config).steps == 19  # ceil(1.5 x 100 / 8); steps=7 is ignored
    assert steps_from_epochs(TrainConfig.resolve(None, ["output_dir=o", f"data.train=[{glob}]", "steps=7"])).steps == 7
    with pytest.raises(ConfigError, match="epochs: synthetic data has no records"):
        TrainConfig.resolve(None, ["output_dir=o", "data.synthetic=true", "epochs=2"])


def _varied_lengths(n: int = 32):
    """64 examples of 3..n tokens for a masked-LM, a sentence and a token task; their layout; a tiny model."""
    import keras

    from trainer.model.backbone import Transformer
    from trainer.model.config import TransformerConfig
    from trainer.tasks import TaskConfig, make_task
    from trainer.tasks.model import build_model

    tasks = (make_task(TaskConfig(name="mlm", kind="masked_lm")), make_task(TaskConfig(name="topic"), 3),
             make_task(TaskConfig(name="tags", kind="token"), 2))
    layout = data_lib.Layout(n, 4, tasks)
    rng = np.random.default_rng(0)
    examples = []
    for length in rng.integers(3, n + 1, 64):
        ids = np.zeros(n, np.int32)
        ids[:length] = rng.integers(5, 90, length)
        examples.append({"token_ids": ids, "padding_mask": (np.arange(n) < length).astype(np.int32),
                         "segment_ids": np.zeros(n, np.int32), "masked_positions": rng.integers(1, length, 4).astype(np.int32),
                         "mlm_labels": rng.integers(5, 90, 4).astype(np.int32), "mlm_weights": np.ones(4, np.float32),
                         "topic_labels": np.int32(rng.integers(0, 3)), "topic_weights": np.float32(1),
                         "topic_index": np.int32(0), "tags_labels": rng.integers(0, 2, n).astype(np.int32),
                         "tags_weights": (np.arange(n) < length).astype(np.float32)})
    dataset = tf.data.Dataset.from_tensor_slices({k: np.stack([e[k] for e in examples]) for k in examples[0]})
    keras.utils.set_random_seed(0)
    model = build_model(Transformer(TransformerConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2,
                                                      intermediate_size=32, max_positions=64)), tasks)
    return tasks, layout, dataset, model


def test_length_buckets_pad_each_batch_to_its_bucket_and_compute_what_the_fixed_length_batch_does():
    """Batches padded to their bucket give the same logits at every real position and the same losses as the same
    examples padded to the records' length (masked keys contribute nothing)."""
    from trainer.training.config import DataConfig

    n = 32
    tasks, layout, dataset, model = _varied_lengths(n)
    assert data_lib.bucket_lengths(32, 4) == [8, 16, 24, 32] and data_lib.bucket_lengths(128, 4) == [32, 64, 96, 128]
    batches = list(data_lib.bucketed(dataset, layout, 4, 8))
    seen = 0
    for batch in batches:
        width = batch["token_ids"].shape[1]
        real = batch["padding_mask"].numpy().sum(axis=1)
        assert width in (8, 16, 24, 32) and real.max() <= width and real.min() > width - 8  # one bucket per batch
        full = {k: tf.pad(v, [[0, 0], [0, n - width]]) if v.shape.rank == 2 and v.shape[1] == width and k != "masked_positions"
                else v for k, v in batch.items()}
        short_out = model(data_lib.model_inputs(batch, layout), training=False)
        full_out = model(data_lib.model_inputs(full, layout), training=False)
        np.testing.assert_allclose(short_out["topic"], full_out["topic"], atol=1e-5)
        np.testing.assert_allclose(short_out["mlm"], full_out["mlm"], atol=1e-5)
        np.testing.assert_allclose(short_out["tags"], full_out["tags"][:, :width], atol=1e-5)
        for task in tasks:
            sums = task.weight_sum(batch)
            assert float(task.loss(short_out[task.name], batch, sums)) == pytest.approx(
                float(task.loss(full_out[task.name], full, sums)), abs=1e-5)
        seen += len(real)
    assert 32 <= seen <= 64  # a bucket's last partial batch is dropped, as the fixed-length path drops its remainder
    with pytest.raises(ConfigError, match="length_buckets: must be >= 0"):
        DataConfig(train=("x",), length_buckets=-1).validate()


def test_evaluation_in_length_buckets_sees_every_example_and_scores_what_the_fixed_length_pass_does():
    from trainer.training.metrics import collect_examples, evaluate

    tasks, layout, dataset, model = _varied_lengths()
    bucketed = data_lib.bucketed(dataset, layout, 4, 8, drop_remainder=False)
    assert len({int(b["token_ids"].shape[1]) for b in bucketed}) > 1
    fixed, by_length = evaluate(model, dataset.batch(8), layout), evaluate(model, bucketed, layout)
    assert by_length["examples"] == fixed["examples"] == 64
    for task in tasks:
        for metric, value in fixed[task.name].items():
            if isinstance(value, float):
                assert by_length[task.name][metric] == pytest.approx(value, abs=1e-5), (task.name, metric)
            else:  # confusion matrices, label lists
                assert by_length[task.name][metric] == value, (task.name, metric)
    # The baselines' input: every example, the bucketed batches padded back to one width.
    columns = collect_examples(bucketed)
    assert columns["token_ids"].shape[0] == 64 and columns["tags_labels"].shape == columns["token_ids"].shape
    assert sorted(map(tuple, columns["token_ids"].tolist())) == sorted(
        map(tuple, collect_examples(dataset.batch(8))["token_ids"][:, :columns["token_ids"].shape[1]].tolist()))
