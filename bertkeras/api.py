"""The Python API's verbs: load a checkpoint, train a model on tasks from any data form, load a trained model,
predict on raw strings. Each is a thin layer over the library the CLI and the pipelines run
(:func:`trainer.training.loop.fit` underneath, with the same configs, schedules, strategies, checkpoints and
export), so a notebook and a pipeline get the same semantics."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence

import keras
import numpy as np

from bertkeras.data import finetuning_records
from trainer import features, fileio
from trainer.config import ConfigError
from trainer.tasks import Task, TaskConfig
from trainer.text.base import TextEncoder
from trainer.training.config import DataConfig, OptimizerConfig, RuntimeConfig, TrainConfig, TrainingError
from trainer.training.data import Source, memory_source


def load_checkpoint(path: str, lower_case: bool = True) -> tuple[keras.Model, TextEncoder | None]:
    """A pretrained checkpoint (Google TF1 BERT, Hugging Face BERT safetensors, OpenAI GPT-1 release) ->
    (model with its pretraining heads where the checkpoint has them, its encoder or None). In memory; the
    round trip and parity checks are ``bertkeras convert``'s."""
    from trainer.checkpoints.config import ConvertConfig  # noqa: PLC0415
    from trainer.checkpoints.convert import load_source  # noqa: PLC0415

    model, _, _, encoder = load_source(ConvertConfig(source=path, lower_case=lower_case))
    return model, encoder


def load_model(path: str) -> keras.Model:
    """A trained model from a ``.keras`` file or a model folder (a run's ``export/``, a conversion), in a fresh
    process too: the model's registered classes are imported here."""
    from trainer.model.saving import load_model as load_file, load_model_folder  # noqa: PLC0415

    return load_file(path) if path.endswith(".keras") else load_model_folder(path)


class History(keras.callbacks.History):
    """What :func:`train` returns: ``history`` (per logged step: ``loss`` and each task's loss, the learning
    rate, examples/s), ``steps`` (the logged steps), ``metrics`` (the run's final metrics, ``eval`` included),
    ``model`` (the trained model: backbone and heads) and ``output_dir``."""

    def __init__(self, metrics: dict, model: keras.Model | None, output_dir: str):
        super().__init__()
        self.metrics, self.output_dir, self.steps = metrics, output_dir, []
        if model is not None:
            self.set_model(model)
        for record in metrics.get("history", []):
            self.steps.append(record["step"])
            for key, value in record.items():
                if key != "step":  # "loss/loss" (the weighted total) is "loss", as in Keras; tasks: "loss/<task>"
                    self.history.setdefault("loss" if key == "loss/loss" else key, []).append(value)

    @property
    def eval(self) -> dict:
        return self.metrics.get("eval", {})


def _task_configs(tasks: Iterable) -> tuple[TaskConfig, ...]:
    if isinstance(tasks, (TaskConfig, Task, Mapping)):
        tasks = [tasks]
    out = []
    for i, task in enumerate(tasks):
        if isinstance(task, Task):
            task = task.config
        elif isinstance(task, Mapping):
            task = TaskConfig.from_dict(task, source=f"tasks[{i}]")
        elif not isinstance(task, TaskConfig):
            raise ConfigError(f"tasks[{i}]: a TaskConfig, a task object or a mapping, got {task!r}")
        out.append(task)
    return tuple(out)


def _sources(data, tasks: Sequence[TaskConfig], encoder: TextEncoder | None, max_seq_length: int, role: str,
             labels: Mapping[str, list[str]]) -> tuple[list[str], dict[str, Source]]:
    """Any data form -> (source names for the config, the in-memory sources by name). Record folders and globs
    stay names; records made in memory are sources; ``{task name: examples}`` are packed for that task (with
    ``labels``, the training examples' label vocabularies, when packing evaluation examples)."""
    if data is None:
        return [], {}
    if isinstance(data, (str, os.PathLike, Source, Mapping)) or not isinstance(data, Sequence):
        data = [data]
    by_name = {t.name: t for t in tasks}
    names, in_memory = [], {}
    labels = {**_labels_of([i for i in data if isinstance(i, (str, os.PathLike))],
                           {i.spec: i for i in data if isinstance(i, Source)}, tasks), **labels}
    for item in data:
        if isinstance(item, Mapping):
            for name, examples in item.items():
                if name not in by_name:
                    raise ConfigError(f"{role}: examples for {name!r}, which is not a task (tasks: {sorted(by_name)})")
                if encoder is None:
                    raise ConfigError(f"{role}: in-memory examples of {name!r} need the encoder: train(..., encoder=...)")
                source = finetuning_records(by_name[name], examples, encoder, max_seq_length, labels.get(name))
                names.append(source.spec)
                in_memory[source.spec] = source
        elif isinstance(item, Source):
            names.append(item.spec)
            in_memory[item.spec] = item
        elif _is_dataset(item):  # serialized records; the name is its place in the list (no digest to take)
            source = memory_source(f"tf.data:{role}[{len(names)}]", item, {})
            names.append(source.spec)
            in_memory[source.spec] = source
        elif isinstance(item, (str, os.PathLike)):
            names.append(os.fspath(item))
        else:
            raise ConfigError(f"{role}: a record folder or glob, records from bertkeras.finetuning_records / "
                              f"pretraining_records, a tf.data.Dataset of serialized records, or {{task name: "
                              f"examples}}; got {type(item).__name__}")
    return names, in_memory


def _is_dataset(item) -> bool:
    import tensorflow as tf  # noqa: PLC0415

    return isinstance(item, tf.data.Dataset)


def batches(data, tasks: Iterable, batch_size: int = 32, encoder: TextEncoder | None = None,
            max_seq_length: int = 128, training: bool = False, seed: int = 0, data_config: Mapping | None = None):
    """The batches :func:`train` would read from ``data`` (any of its forms), as a ``tf.data.Dataset`` of dicts:
    ``token_ids``, ``padding_mask``, ``segment_ids`` and each task's targets (zeros with weight 0 where a
    source lacks a task). ``training``: shuffled, repeated and dropping the last partial batch, as in training.
    With ``data_config={"length_buckets": N}`` each batch is padded to its length bucket, so batches come grouped
    by length and, without ``training``, not in the data's order (as in evaluation)."""
    from trainer.tasks import make_tasks  # noqa: PLC0415
    from trainer.training import data as data_lib  # noqa: PLC0415

    task_configs = _task_configs(tasks)
    names, in_memory = _sources(data, task_configs, encoder, max_seq_length, "data", {})
    sources = [in_memory[n] if n in in_memory else data_lib.inspect_source(n) for n in names]
    task_objects = make_tasks(task_configs, [s.label_place for s in sources])
    layout = data_lib.check_sources(sources, task_objects, None, None, None, verify=False, every_task=False)
    config = DataConfig.from_dict({**dict(data_config or {}), "train": names, "seed": seed}, "data_config")
    return data_lib.make_dataset(sources, layout, config, batch_size, training=training)


def _refuse_other_run(config: TrainConfig) -> None:
    """A new run into a folder that holds a run is refused unless resume/overwrite was said: the error names the
    fields that differ from the saved run's config."""
    from trainer.training.runs import existing_run  # noqa: PLC0415

    try:
        existing = existing_run(dataclasses.replace(config, on_existing="resume"))
    except TrainingError as err:
        message = str(err).split("\nUse the run's config", 1)[0]
        raise TrainingError(f"{message}\nPass resume=True to continue it anyway (override), overwrite=True to move it "
                            f"aside and start again, or another output_dir.") from None
    if existing.action != "new":
        raise TrainingError(f"{config.output_dir} holds a training run with this config (at step "
                            f"{existing.checkpoint_step}): pass resume=True to continue or reuse it, overwrite=True to "
                            f"move it aside and start again, or another output_dir.")


def train(model: keras.Model | None, tasks: Iterable, data, eval_data=None, *, encoder: TextEncoder | str | None = None,
          output_dir: str | None = None, steps: int = 0, epochs: float = 0.0, batch_size: int = 32,
          learning_rate: float = 1e-4, warmup_steps: int = 0, max_seq_length: int = 128,
          train_weights: Sequence[float] = (), callbacks: Sequence[keras.callbacks.Callback] = (),
          resume: bool = False, overwrite: bool = False, export: bool | None = None, log_every: int = 50,
          seed: int = 0, attention_mask: Callable | None = None, data_config: Mapping | None = None,
          **config) -> History:
    """Trains ``model`` on ``tasks`` and returns a :class:`History` whose ``model`` has the backbone and one head
    per task. ``model``: a backbone honouring the contract of :mod:`trainer.model.backbone` (trained in place),
    or a model with a ``backbone`` such as :func:`load_checkpoint` and :func:`load_model` return (its backbone is
    trained in place, and its heads start the heads of the same names and shapes).

    ``data`` / ``eval_data``: record folders or globs (the Beam steps' output), records made in memory
    (:func:`bertkeras.finetuning_records`, :func:`bertkeras.pretraining_records`), ``tf.data.Dataset`` s of
    serialized records (their tasks need ``num_classes``), ``{task name: examples}`` packed here with
    ``encoder`` (with the label vocabulary of the task's other sources), or a list mixing them. ``steps`` or
    ``epochs`` (over all training records) say how long; ``train_weights`` sample the sources;
    ``data_config``: other :class:`DataConfig` fields (``shuffle_buffer``, ``dynamic_masking``, ...).

    ``callbacks``: Keras callbacks; each ``log_every`` steps is an epoch to them (``on_epoch_end`` gets the
    logged losses, ``loss`` the weighted total), so ``EarlyStopping(monitor="loss")`` stops the run there (it is
    then evaluated and exported as at its end). ``attention_mask``: the seed's explicit mask, a function of a
    batch (``token_ids``, ``padding_mask``, ``segment_ids``; tensors) giving [batch, query, key] 0/1, applied with
    the padding mask in training and evaluation (pass it to :class:`Predictor` too; the exported SavedModel
    applies padding only).

    ``output_dir`` (default: a new temporary folder, left in place: ``history.output_dir``) gets checkpoints,
    ``metrics.json`` and, when ``export`` (default: when ``output_dir`` is given), the exported model. A folder
    that holds a run is refused, naming what differs, unless ``resume=True`` (continue it) or ``overwrite=True``
    (move it aside). Other :class:`TrainConfig` fields can be given as keywords (``optimizer={...}``,
    ``runtime={...}``, ``init_from=...``)."""
    from trainer.text.factory import load_encoder  # noqa: PLC0415
    from trainer.training.loop import fit  # noqa: PLC0415

    if resume and overwrite:
        raise ConfigError("resume and overwrite: give one of them")
    if not steps and not epochs:
        raise ConfigError("steps or epochs: say how long to train")
    if isinstance(encoder, (str, os.PathLike)):
        encoder = load_encoder(os.fspath(encoder))
    task_configs = _task_configs(tasks)
    train_names, in_memory = _sources(data, task_configs, encoder, max_seq_length, "data", {})
    labels = _labels_of(train_names, in_memory, task_configs)
    eval_names, eval_memory = _sources(eval_data, task_configs, encoder, max_seq_length, "eval_data", labels)
    if not train_names:
        raise ConfigError("data: no training data")
    given_dir = output_dir is not None
    output_dir = os.fspath(output_dir) if given_dir else tempfile.mkdtemp(prefix="bertkeras-run-")
    encoder_dir = fileio.join(output_dir, features.ENCODER_DIR) if encoder is not None else ""
    base = backbone = None
    if model is not None:
        if getattr(model, "backbone", None) is not None:
            base, backbone = model, model.backbone
        else:
            backbone = model
    try:
        train_config = TrainConfig(
            output_dir=output_dir, on_existing="override" if resume else "resume",
            encoder_dir=encoder_dir, tasks=task_configs, steps=steps or 1, epochs=epochs,
            data=DataConfig.from_dict({**dict(data_config or {}), "train": train_names, "eval": eval_names,
                                       "global_batch_size": batch_size, "train_weights": list(train_weights)},
                                      "data_config"),
            optimizer=_section(OptimizerConfig, config.pop("optimizer", {}),
                               {"learning_rate": learning_rate, "warmup_steps": warmup_steps}),
            runtime=_section(RuntimeConfig, config.pop("runtime", {}), {}),
            export=given_dir if export is None else export, log_every=log_every,
            checkpoint_every=config.pop("checkpoint_every", max(steps, 1000)), seed=seed, **config)
    except TypeError as err:
        raise ConfigError(f"train: {err}") from None
    if model is None and not train_config.init_from:
        raise ConfigError("model: give the model to train (bertkeras.Transformer(...), load_checkpoint(...)[0]), "
                          "or init_from=<model folder>")
    if overwrite:
        _move_aside_a_run(train_config)  # before the encoder is written into the new run's folder
    elif not resume:
        _refuse_other_run(train_config)
    if encoder is not None:
        encoder.save(encoder_dir)
    callback_list = keras.callbacks.CallbackList(list(callbacks))
    epoch, models = [0], []

    def progress(record: dict, trained: keras.Model) -> bool:
        if not models:  # the callbacks see the model once it is built
            models.append(trained)
            callback_list.set_model(trained)
            trained.stop_training = False
        logs = {("loss" if k == "loss/loss" else k): v for k, v in record.items() if k != "step"}
        callback_list.on_train_batch_end(record["step"], logs)
        callback_list.on_epoch_end(epoch[0], logs)
        epoch[0] += 1
        callback_list.on_epoch_begin(epoch[0])
        return bool(getattr(trained, "stop_training", False))

    callback_list.on_train_begin()
    callback_list.on_epoch_begin(0)
    metrics, trained = fit(train_config, backbone, {**in_memory, **eval_memory}, progress=progress,
                           attention_mask=attention_mask, base=base)
    if trained is None:  # the run in output_dir was already complete: its export is the model
        export_dir = fileio.join(output_dir, features.EXPORT_DIR)
        if not fileio.exists(fileio.join(export_dir, features.MODEL_FILE)):
            raise TrainingError(f"{output_dir}: the run is already complete (step {metrics.get('step')}) and has no "
                                f"export to return: raise steps to train longer, or overwrite=True to start again")
        trained = load_model(export_dir)
    history = History(metrics, trained, output_dir)
    callback_list.on_train_end(metrics.get("eval", {}))
    return history


def _section(cls, given, defaults: dict):
    """A nested config from a mapping or an instance, over the keyword defaults."""
    if isinstance(given, cls):
        return given
    if not isinstance(given, Mapping):
        raise ConfigError(f"{cls.__name__}: a mapping of its fields or a {cls.__name__}, got {given!r}")
    return cls.from_dict({**defaults, **given}, cls.__name__)


def _labels_of(names: list[str], in_memory: Mapping[str, Source], tasks: Sequence[TaskConfig]) -> dict[str, list[str]]:
    """Each task's label vocabulary from its sources (in memory or record folders): examples given as Python
    objects are packed with it, so a label id means one label everywhere."""
    from trainer.tasks.base import label_names  # noqa: PLC0415

    places = [in_memory[n].label_place if n in in_memory else n for n in names]
    found = {}
    for task in tasks:
        try:
            labels = label_names(task.name, [p for p in places if isinstance(p, dict) or os.path.isdir(p)])
        except OSError:
            labels = None
        if labels:
            found[task.name] = labels
    return found


def _move_aside_a_run(config: TrainConfig) -> None:
    from trainer.training.runs import existing_run, move_aside  # noqa: PLC0415

    if existing_run(dataclasses.replace(config, on_existing="fresh")).action == "fresh":
        move_aside(config.output_dir)


class Predictor:
    """Raw strings -> each served head's answer, in Python: texts are packed as the training records are
    (``[CLS] a [SEP] (b [SEP])``, each word's tag read on its first sub-word) and padded to the batch's
    longest, not to ``max_seq_length``. Token tasks answer per word (the text split on whitespace) and per
    sub-word."""

    def __init__(self, model: keras.Model | str, encoder: TextEncoder | str | None = None, max_seq_length: int = 0,
                 batch_size: int = 32, attention_mask: Callable | None = None):
        from trainer.text.factory import load_encoder  # noqa: PLC0415

        if isinstance(model, str):
            folder = model
            model = load_model(folder)
            encoder = encoder or (fileio.join(folder, features.ENCODER_DIR) if not folder.endswith(".keras") else None)
        if encoder is None:
            raise ConfigError("Predictor: needs the encoder (the model folder's encoder/ or an encoder object)")
        if not hasattr(model, "tasks"):
            raise ConfigError(f"Predictor: {getattr(model, 'name', model)!r} has no task heads: give a trained model "
                              f"(History.model, bertkeras.load_model)")
        self.model = model
        self.encoder = load_encoder(encoder) if isinstance(encoder, str) else encoder
        longest = getattr(model.backbone, "max_sequence_length", None)
        self.max_seq_length = min(filter(None, (max_seq_length, longest))) if (max_seq_length or longest) else 512
        self.batch_size = batch_size
        self.attention_mask = attention_mask
        self.tasks = [t for t in model.tasks if t.served and t.has_examples]

    def predict(self, texts: Sequence[str], text_b: Sequence[str] | None = None) -> list[dict]:
        """One dict per text: per sentence task ``{task: label, task_probabilities: {label: p}}``; per token
        task ``{task: [(word, tag), ...], task_subwords: [(sub-word, tag), ...]}``."""
        if isinstance(texts, str):
            raise ConfigError("predict: give a list of texts")
        texts, text_b = list(texts), (None if text_b is None else list(text_b))
        if text_b is not None and len(text_b) != len(texts):
            raise ConfigError(f"predict: {len(texts)} texts but {len(text_b)} text_b")
        results: list[dict] = [{} for _ in texts]
        groups: dict[type, list[Task]] = {}
        for task in self.tasks:  # tasks of one class read the same packing: one forward pass each
            groups.setdefault(type(task), []).append(task)
        for tasks in groups.values():
            lead = tasks[0]
            try:
                examples = [lead.unlabelled(text, text_b[i] if text_b is not None else None) for i, text in enumerate(texts)]
            except ValueError as err:
                raise ConfigError(f"predict: {err}") from None
            rows = [row for _, row, _ in lead.pack_examples(self.encoder, examples, {None: 0}, self.max_seq_length)]
            for first in range(0, len(rows), self.batch_size):
                batch = rows[first : first + self.batch_size]
                inputs = _model_inputs(batch, lead)
                if self.attention_mask is not None:
                    inputs[features.ATTENTION_MASK] = self.attention_mask(
                        {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()})
                outputs = self.model(inputs, training=False)
                for task in tasks:
                    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(outputs[task.name], axis=-1))
                    for offset, row in enumerate(batch):  # tasks of one class pack alike: the lead's rows serve
                        results[first + offset].update(task.answer(probabilities[offset], row, examples[first + offset],
                                                                   self.encoder.id_to_token))
        return results


def _model_inputs(rows: list[dict], task: Task) -> dict:
    """A batch of packed rows -> the model's inputs, padded to the longest row; the heads' own inputs (a
    sentence task's extraction index) as packed."""
    length = max(len(r[features.INPUT_IDS]) for r in rows)
    lengths = np.array([len(r[features.INPUT_IDS]) for r in rows])
    inputs = {features.PADDING_MASK: (np.arange(length) < lengths[:, None]).astype(np.int32)}
    for name in (features.INPUT_IDS, features.SEGMENT_IDS):
        column = np.zeros((len(rows), length), np.int32)
        for i, row in enumerate(rows):
            column[i, : len(row[name])] = row[name]
        inputs[features.TOKEN_IDS if name == features.INPUT_IDS else name] = column
    for name in task.input_specs():
        if name in rows[0]:
            inputs[name] = np.array([r[name][0] for r in rows], np.int32)
    return inputs
