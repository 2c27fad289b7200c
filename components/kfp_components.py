"""KFP v2 components (no `from __future__ import annotations`: KFP reads the annotations): typed artifacts in, typed artifacts out; each body is one call into
:mod:`components.pipeline_steps`. Components are made by :func:`make_components` for a given container image
(nothing is read from the environment at compile time). Under ``kfp.local.SubprocessRunner(use_venv=False)``
the same bodies run in the local Python environment.
"""


import dataclasses
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def train_vocabulary(corpus: Input[Dataset], encoder: Output[Artifact], config_yaml: str = ""):
    """Trains a WordPiece vocabulary or SentencePiece model from a corpus sample."""
    from components import pipeline_steps

    encoder.metadata.update(pipeline_steps.train_vocabulary(corpus.path, encoder.path, config_yaml))


def preprocess_corpus(corpus: Input[Dataset], encoder: Input[Artifact], records: Output[Dataset], config_yaml: str = "",
                      runner: str = "DirectRunner", beam_args: list = []):  # noqa: B006 - KFP needs a literal default
    """Beam: corpus -> MLM/NSP (or causal-LM) TFRecords in Google's schema."""
    from components import pipeline_steps

    records.metadata.update(pipeline_steps.preprocess_corpus(corpus.path, encoder.path, records.path, config_yaml,
                                                             runner, beam_args))


def prepare_finetuning_data(data: Input[Dataset], encoder: Input[Artifact], records: Output[Dataset], config_yaml: str = "",
                            runner: str = "DirectRunner", beam_args: list = []):  # noqa: B006 - KFP needs a literal default
    """Beam: labelled TSV/CSV/JSONL/CoNLL -> one task's TFRecords and label vocabulary."""
    from components import pipeline_steps

    records.metadata.update(pipeline_steps.prepare_finetuning_data(data.path, encoder.path, records.path, config_yaml,
                                                                   runner, beam_args))


def convert_checkpoint(checkpoint: Input[Model], model: Output[Model], encoder: Output[Artifact], report: Output[Metrics],
                       config_yaml: str = "", reference_outputs: str = ""):
    """Any supported checkpoint -> our model; fails when the round trip or the output parity check fails."""
    import shutil

    from components import pipeline_steps

    for key, value in pipeline_steps.convert_checkpoint(checkpoint.path, model.path, config_yaml, reference_outputs).items():
        report.log_metric(key, value)
    shutil.copytree(model.path + "/encoder", encoder.path)


def pretrain(train_data: Input[Dataset], model: Output[Model], metrics: Output[Metrics], config_yaml: str = "",
             init_model: Input[Model] = None, encoder: Input[Artifact] = None):
    """Pretraining on one folder of records; the model artifact is the run folder."""
    from components import pipeline_steps

    result = pipeline_steps.train(model.path, config_yaml, [train_data.path], [],
                                  init_model.path if init_model is not None else "",
                                  encoder.path if encoder is not None else "")
    for key, value in result.items():
        metrics.log_metric(key, value)


def train(train_data: Input[List[Dataset]], eval_data: Input[List[Dataset]], model: Output[Model],
          metrics: Output[Metrics], config_yaml: str = "", init_model: Input[Model] = None,
          encoder: Input[Artifact] = None):
    """Multi-task fine-tuning on every task's records at once (lists: any number of tasks, from dsl.Collected)."""
    from components import pipeline_steps

    result = pipeline_steps.train(model.path, config_yaml, [a.path for a in train_data], [a.path for a in eval_data],
                                  init_model.path if init_model is not None else "",
                                  encoder.path if encoder is not None else "")
    for key, value in result.items():
        metrics.log_metric(key, value)


def evaluate(model: Input[Model], eval_data: Input[List[Dataset]], metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics], report: Output[HTML], report_markdown: Output[Markdown],
             thresholds: dict = {}, baseline_model: Input[Model] = None,  # noqa: B006
             max_batches: int = 0, champion: str = "") -> NamedTuple("EvaluationOutputs", passed=bool, summary=str):
    """Per-task metrics on every task's evaluation records, plots and the threshold gate (``summary`` feeds
    the gate component); ``champion``: the registered model to compare with ('' = none yet)."""
    import json
    from collections import namedtuple

    from components import pipeline_steps

    result = pipeline_steps.evaluate_into(model.path, [a.path for a in eval_data], report.path, report_markdown.path,
                                          thresholds, baseline_model.path if baseline_model is not None else "",
                                          max_batches, champion)
    for key, value in result["flat"].items():
        metrics.log_metric(key, value)
    for task, values in result["metrics"].items():
        if isinstance(values, dict) and "confusion_matrix" in values:  # the artifact holds one; the report has all
            labels = values.get("labels") or [str(i) for i in range(len(values["confusion_matrix"]))]
            confusion.log_confusion_matrix(labels, values["confusion_matrix"])
            break
    summary = json.dumps({"passed": result["passed"], "reasons": result["reasons"], "metrics": result["flat"]})
    return namedtuple("EvaluationOutputs", ["passed", "summary"])(result["passed"], summary)


def evaluate_pretraining(model: Input[Model], eval_data: Input[Dataset], metrics: Output[Metrics],
                         report: Output[HTML], report_markdown: Output[Markdown], max_batches: int = 0):
    """Metrics of the pretraining run on (part of) its records, and its report; no gate."""
    from components import pipeline_steps

    result = pipeline_steps.evaluate_into(model.path, [eval_data.path], report.path, report_markdown.path,
                                          max_batches=max_batches)
    for key, value in result["flat"].items():
        metrics.log_metric(key, value)


def register(model: Input[Model], project: str, region: str, display_name: str, serving_image: str,
             model_store: str = "") -> str:
    """Copies the export into ``model_store`` (outside the expiring pipeline root) and uploads that copy to the
    Vertex AI Model Registry."""
    from components import pipeline_steps

    return pipeline_steps.register_published(model.uri, model_store, project, region, display_name, serving_image)


def find_champion(registry_dir: str, display_name: str, project: str = "", region: str = "",
                  target: str = "local") -> str:
    """The currently registered model (target local: the latest version in ``registry_dir``; vertex: the latest
    model of that display name in the Vertex AI Model Registry), or '' when there is none."""
    from components import pipeline_steps

    if target == "vertex":
        return pipeline_steps.find_vertex_champion(project, region, display_name)
    return pipeline_steps.find_champion(registry_dir, display_name)


def gate(summary: str) -> bool:
    """The evaluation's verdict (every threshold held) as the single output ``dsl.If`` tests."""
    import json

    return bool(json.loads(summary)["passed"])


def local_register(model: Input[Model], project: str, region: str, display_name: str, serving_image: str,
                   registry_dir: str = "") -> str:
    """Registration without Vertex AI: a versioned copy of the export in a local registry folder."""
    from components import pipeline_steps

    return pipeline_steps.register_local(model.path, registry_dir, display_name)


def model_encoder(model: Input[Model], encoder: Output[Artifact]):
    """The encoder assets that travel with a model folder (converted model or a training run)."""
    from components import pipeline_steps

    pipeline_steps.copy_model_encoder(model.path, encoder.path)


@dataclasses.dataclass(frozen=True)
class Components:
    train_vocabulary: object
    preprocess_corpus: object
    prepare_finetuning_data: object
    convert_checkpoint: object
    pretrain: object
    train: object
    evaluate: object
    evaluate_pretraining: object
    register: object
    local_register: object
    find_champion: object
    gate: object
    model_encoder: object


def make_components(image: str) -> Components:
    """The components, built on ``image`` (the component image from infra/, which has this project installed)."""
    def make(function):
        return dsl.component(function, base_image=image, install_kfp_package=False)

    return Components(**{f.name: make(globals()[f.name]) for f in dataclasses.fields(Components)})
