"""What each KFP component does, as plain functions of paths and parameters (no KFP types), so the component
bodies in :mod:`components.kfp_components` stay one call long and this logic is tested directly.

Each step takes its typed config as YAML text (``config_yaml``, the same fields as the CLI's ``--config``) and
the artifact paths KFP hands it; paths override the config's path fields.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import os
import re

import yaml

from trainer import features, fileio
from trainer.config import Config

REPORT_HTML = "report.html"
REPORT_MARKDOWN = "report.md"


def _config(cls: type[Config], config_yaml: str, **paths) -> Config:
    data = yaml.safe_load(config_yaml or "") or {}
    if not isinstance(data, dict):
        raise ValueError(f"config_yaml of {cls.__name__}: must be a mapping, got {type(data).__name__}")
    for key, value in paths.items():
        node = data
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return cls.from_dict(data, source=f"{cls.__name__} config_yaml").validate()


def corpus_files(path: str) -> list[str]:
    """A corpus artifact is a file or a folder of text files."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if not f.startswith("."))
        if not files:
            raise ValueError(f"{path}: empty corpus folder")
        return files
    return [path]


def train_vocabulary(corpus: str, output_dir: str, config_yaml: str = "") -> dict:
    from components.preprocessing.vocabulary import VocabularyConfig  # noqa: PLC0415
    from components.preprocessing.vocabulary import train_vocabulary as train  # noqa: PLC0415

    config = _config(VocabularyConfig, config_yaml, inputs=corpus_files(corpus), output_dir=output_dir)
    encoder = train(config)
    return encoder.identity()


def preprocess_corpus(corpus: str, encoder_dir: str, output_dir: str, config_yaml: str = "",
                      runner: str = "DirectRunner", beam_args: list | None = None) -> dict:
    """Beam: DirectRunner in this process, or DataflowRunner launched from it (project, region, temp location
    and worker image come in ``beam_args``)."""
    from components.preprocessing.pretraining import PretrainingDataConfig, run  # noqa: PLC0415

    config = _config(PretrainingDataConfig, config_yaml, inputs=corpus_files(corpus), output_dir=output_dir,
                     **{"encoder.assets_dir": encoder_dir}, runner=runner, beam_args=list(beam_args or []))
    manifest = run(config)
    return {"records": manifest["records"], "shards": len(manifest["shards"]), **manifest["counts"]}


def prepare_finetuning_data(data: str, encoder_dir: str, output_dir: str, config_yaml: str = "",
                            runner: str = "DirectRunner", beam_args: list | None = None) -> dict:
    """Beam: one task's labelled data -> its records; ``task`` in the result names them in the pipeline's UI."""
    from components.preprocessing.finetuning import FinetuningDataConfig, run  # noqa: PLC0415

    config = _config(FinetuningDataConfig, config_yaml, inputs=corpus_files(data), output_dir=output_dir,
                     **{"encoder.assets_dir": encoder_dir}, runner=runner, beam_args=list(beam_args or []))
    manifest = run(config)
    return {"task": manifest["task"], "records": manifest["records"], "labels": len(manifest["labels"]),
            **manifest["counts"]}


def convert_checkpoint(source: str, output_dir: str, config_yaml: str = "", reference_outputs: str = "") -> dict:
    """Any supported checkpoint -> our model, verified by the round trip and (with references) output parity;
    raises when either check fails, so the pipeline stops."""
    from trainer.checkpoints.convert import ConvertConfig, convert  # noqa: PLC0415

    paths = {"source": source, "output_dir": output_dir}
    if reference_outputs:
        paths["reference_outputs"] = reference_outputs
    report = convert(_config(ConvertConfig, config_yaml, **paths))
    return {"mapped": len(report.mapped), "ignored": len(report.ignored),
            **{k: v for k, v in report.parity.items() if isinstance(v, (int, float))}}


def train(output_dir: str, config_yaml: str = "", train_data: list | None = None, eval_data: list | None = None,
          init_from: str = "", encoder_dir: str = "") -> dict:
    from trainer.training.config import TrainConfig  # noqa: PLC0415
    from trainer.training.loop import train as run  # noqa: PLC0415

    paths: dict = {"output_dir": output_dir}
    if train_data:
        paths["data.train"] = in_task_order(list(train_data), config_yaml)
    if eval_data:
        paths["data.eval"] = list(eval_data)
    if init_from:
        paths["init_from"] = model_folder(init_from)
    else:  # the same recipe from scratch (the pipelines' comparison): no loaded layers to keep, so all train
        paths["optimizer.freeze_layers"] = 0
    if encoder_dir:
        paths["encoder_dir"] = encoder_dir
    result = run(_config(TrainConfig, config_yaml, **paths))
    return _flat_metrics(result.get("eval", {}), {"steps": result["step"], "examples_per_second": result["examples_per_second"]})


def in_task_order(folders: list[str], config_yaml: str) -> list[str]:
    """Task record folders in the order of the training config's tasks: a pipeline's fan-in (dsl.Collected)
    need not keep the loop's order, and ``data.train_weights`` are given in the order of the tasks. Folders
    that are not one task's records keep their place in front."""
    data = yaml.safe_load(config_yaml or "") or {}
    names = [t.get("name") for t in data.get("tasks") or [] if isinstance(t, dict)]

    def position(folder: str) -> int:
        manifest = fileio.join(folder, features.MANIFEST_FILE)
        task = json.loads(fileio.read_text(manifest)).get("task") if fileio.exists(manifest) else None
        return names.index(task) if task in names else -1

    return sorted(folders, key=position)


def _flat_metrics(evaluation: dict, extra: dict | None = None) -> dict:
    out = dict(extra or {})
    for task, values in evaluation.items():
        if isinstance(values, dict):
            out.update({f"{task}.{k}": v for k, v in values.items() if isinstance(v, (int, float))})
    return out


CHAMPION_SUFFIX = "_vs_champion"  # metric minus the registered model's, on the same evaluation data


def check_thresholds(metrics: dict, thresholds: dict) -> tuple[bool, list[str]]:
    """Every ``task.metric: minimum`` must hold; -> (passed, reasons). Unknown metrics are errors, except the
    comparisons with a champion when no model is registered yet (the first run has nothing to be worse than)."""
    reasons = []
    for key, minimum in thresholds.items():
        if key.endswith(CHAMPION_SUFFIX) and key not in metrics and not any(k.endswith(CHAMPION_SUFFIX) for k in metrics):
            continue
        if key not in metrics:
            raise ValueError(f"thresholds: {key!r} is not a metric of this model (known: {sorted(metrics)})")
        if metrics[key] < minimum:
            reasons.append(f"{key} = {metrics[key]:.4f} < {minimum}")
    return not reasons, reasons


def _compared(metrics: dict, champion: dict) -> None:
    """Adds ``<metric>_vs_champion`` (this model's minus the champion's) to each task's metrics."""
    for task, values in metrics.items():
        theirs = champion.get(task)
        if not isinstance(values, dict) or not isinstance(theirs, dict):
            continue
        for key, value in list(values.items()):
            if (isinstance(value, float) and isinstance(theirs.get(key), float) and key != "weight"
                    and not key.startswith(("baseline", "majority")) and not key.endswith("_over_baseline")):
                values[key + CHAMPION_SUFFIX] = value - theirs[key]


def evaluate(model_dir: str, output_dir: str, data: list | None = None, thresholds: dict | None = None,
             baseline_dir: str = "", max_batches: int = 0, champion_dir: str = "") -> dict:
    """Per-task metrics on records, the threshold gate, and a report (HTML + Markdown with PNG plots: loss
    curves from the run's history, confusion matrices). ``baseline_dir``: the same recipe trained from scratch
    (reported as such); ``champion_dir``: the registered model, evaluated
    on the same data (``<metric>_vs_champion`` for the gate)."""
    from trainer.training.config import EvaluateConfig  # noqa: PLC0415
    from trainer.training.runs import evaluate_run  # noqa: PLC0415

    def evaluated(folder: str, baselines: bool = True) -> dict:
        return evaluate_run(EvaluateConfig(model_dir=model_folder(folder), data=tuple(data or ()),
                                           max_batches=max_batches, baselines=baselines))

    metrics = evaluated(model_dir)
    compared = {}
    if champion_dir:
        compared["champion"] = evaluated(champion_dir, baselines=False)
        _compared(metrics, compared["champion"])
    if baseline_dir:
        compared[FROM_SCRATCH] = evaluated(baseline_dir, baselines=False)
    flat = _flat_metrics(metrics)
    passed, reasons = check_thresholds(flat, thresholds or {})
    history_file = fileio.join(model_dir, features.METRICS_FILE)
    history = json.loads(fileio.read_text(history_file)).get("history", []) if fileio.exists(history_file) else []
    fileio.makedirs(output_dir)
    write_report(output_dir, metrics, history, thresholds or {}, passed, reasons, compared, champion_dir,
                 _started_from(model_dir))
    result = {"metrics": metrics, "flat": flat, "passed": passed, "reasons": reasons, "champion": champion_dir}
    if FROM_SCRATCH in compared:
        result["baseline"] = compared[FROM_SCRATCH]
    fileio.atomic_write_text(fileio.join(output_dir, features.METRICS_FILE), json.dumps(result, indent=2))
    return result


def _started_from(model_dir: str) -> str:
    """What a trained model's run started from: its ``init_from`` ('' for none; None: no training config)."""
    path = fileio.join(model_folder(model_dir), features.TRAINING_CONFIG_FILE)
    return (yaml.safe_load(fileio.read_text(path)) or {}).get("init_from", "") if fileio.exists(path) else None


def evaluate_into(model_dir: str, data: list, report_html: str, report_markdown: str, thresholds: dict | None = None,
                  baseline_dir: str = "", max_batches: int = 0, champion_dir: str = "") -> dict:
    """:func:`evaluate` with its two reports written to the given (artifact) paths: the shared body of the
    evaluate components."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(model_dir, tmp, data, thresholds, baseline_dir, max_batches, champion_dir)
        for name, target in ((REPORT_HTML, report_html), (REPORT_MARKDOWN, report_markdown)):
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copy(os.path.join(tmp, name), target)
    return result


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def plots(metrics: dict, history: list[dict]) -> dict[str, bytes]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    images = {}
    if history:
        figure, axis = plt.subplots(figsize=(6, 3.5))
        for key in sorted(k for k in history[0] if k.startswith("loss/")):
            axis.plot([h["step"] for h in history], [h[key] for h in history], label=key[5:])
        axis.set_xlabel("step"), axis.set_ylabel("training loss"), axis.legend(), axis.grid(alpha=0.3)
        images["loss_curves.png"] = _png(figure)
        plt.close(figure)
    for task, values in metrics.items():
        if isinstance(values, dict) and "confusion_matrix" in values:
            matrix = values["confusion_matrix"]
            labels = values.get("labels") or [str(i) for i in range(len(matrix))]
            figure, axis = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1.0 + 0.6 * len(labels)))
            axis.imshow(matrix, cmap="Blues")
            axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right"), axis.set_yticks(range(len(labels)), labels)
            for i, row in enumerate(matrix):
                for j, count in enumerate(row):
                    axis.text(j, i, str(count), ha="center", va="center", fontsize=8)
            axis.set_xlabel("predicted"), axis.set_ylabel("true"), axis.set_title(task)
            images[f"confusion_{task}.png"] = _png(figure)
            plt.close(figure)
    return images


FROM_SCRATCH = "from scratch"


def stage_rows(metrics: dict, compared: dict[str, dict], started_from: str | None = "") -> list[tuple[str, str, dict[str, float]]]:
    """What each stage adds, per task: (task, stage, {metric: value}) from no model up to this one, over the
    metrics a task's baseline also has: the majority class, the non-neural baseline, the same recipe without the
    pretrained weights (when that run was compared), this model (``started_from``: the weights it was trained
    from, '' for none, None when unknown), and the registered champion for reference."""
    rows = []
    for task, values in metrics.items():
        if not isinstance(values, dict):
            continue
        names = [k for k in values if isinstance(values.get(f"baseline_{k}"), float)]
        if not names:
            continue
        stages = [("majority class", {"accuracy": values["majority_accuracy"]} if "majority_accuracy" in values else {}),
                  (f"baseline: {values.get('baseline', 'non-neural')}", {k: values[f"baseline_{k}"] for k in names})]
        for label, other in compared.items():
            if label == FROM_SCRATCH and isinstance(other.get(task), dict):
                stages.append(("same recipe from scratch (no pretrained weights)",
                               {k: other[task][k] for k in names if k in other[task]}))
        origin = (f"trained from {started_from}" if started_from else "origin unknown" if started_from is None
                  else "trained from scratch")
        stages.append((f"this model ({origin})", {k: values[k] for k in names}))
        if isinstance(compared.get("champion", {}).get(task), dict):
            stages.append(("registered champion", {k: compared["champion"][task][k] for k in names
                                                   if k in compared["champion"][task]}))
        rows += [(task, stage, {k: v for k, v in found.items() if k in names}) for stage, found in stages if found]
    return rows


def write_report(output_dir: str, metrics: dict, history: list, thresholds: dict, passed: bool, reasons: list,
                 compared: dict[str, dict] | None = None, champion_dir: str = "", started_from: str | None = "") -> None:
    """The report: gate verdict, what the baselines are, and a table of every metric beside the compared
    runs' (the champion: the registered model; from scratch: the same recipe without pretrained weights), and what
    each stage adds (:func:`stage_rows`)."""
    compared = compared or {}
    images = plots(metrics, history)
    for name, data in images.items():
        fileio.atomic_write_bytes(fileio.join(output_dir, name), data)
    rows = []
    for task, values in metrics.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, (int, float)) and key != "weight":
                rows.append((task, key, value, [other.get(task, {}).get(key) for other in compared.values()]))
    described = [f"{task}: {values['baseline']}" for task, values in metrics.items()
                 if isinstance(values, dict) and values.get("baseline")]
    notes = []
    if described:
        notes.append("Baselines (`baseline_*`: fit on the training records, scored on the same evaluation examples): "
                     + "; ".join(described))
    notes.append(f"Champion (the registered model, same evaluation data): {champion_dir}" if champion_dir
                 else "Champion: none registered yet")
    verdict = "PASSED" if passed else "FAILED: " + "; ".join(reasons)

    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else ""

    lines = ["# Evaluation report", "", f"Examples: {metrics.get('examples')}; gate: {verdict}", "",
             *[line for note in notes for line in (note, "")],
             "| task | metric | value |" + "".join(f" {name} |" for name in compared),
             "|---|---|---|" + "---|" * len(compared)]
    lines += [f"| {task} | {key} | {value:.4f} |" + "".join(f" {cell(o)} |" for o in others)
              for task, key, value, others in rows]
    stages = stage_rows(metrics, compared, started_from)
    metric_names = sorted({k for _, _, found in stages for k in found}, key=lambda k: (k != "accuracy", k))
    if stages:
        lines += ["", "## What each stage adds", "", "| task | stage | " + " | ".join(metric_names) + " |",
                  "|---|---|" + "---|" * len(metric_names)]
        lines += [f"| {task} | {stage} | " + " | ".join(cell(found.get(k)) for k in metric_names) + " |"
                  for task, stage, found in stages]
    if thresholds:
        lines += ["", "Thresholds: " + ", ".join(f"{k} >= {v}" for k, v in thresholds.items())]
    # Images inline (data URIs), so the Markdown artifact is one self-contained file like the HTML one.
    lines += [""] + [f"![{name}](data:image/png;base64,{base64.b64encode(data).decode()})" for name, data in images.items()]
    fileio.atomic_write_text(fileio.join(output_dir, REPORT_MARKDOWN), "\n".join(lines) + "\n")
    table = "".join(f"<tr><td>{t}</td><td>{k}</td><td>{v:.4f}</td>" + "".join(f"<td>{cell(o)}</td>" for o in others)
                    + "</tr>" for t, k, v, others in rows)
    stage_html = ("<h2>What each stage adds</h2><table border='1'><tr><th>task</th><th>stage</th>"
                  + "".join(f"<th>{k}</th>" for k in metric_names) + "</tr>"
                  + "".join(f"<tr><td>{task}</td><td>{html_lib.escape(stage)}</td>"
                            + "".join(f"<td>{cell(found.get(k))}</td>" for k in metric_names) + "</tr>"
                            for task, stage, found in stages) + "</table>") if stages else ""
    pictures = "".join(f'<h3>{n}</h3><img src="data:image/png;base64,{base64.b64encode(d).decode()}"/>' for n, d in images.items())
    html = (f"<html><head><meta charset='utf-8'><title>bertkeras evaluation</title></head><body>"
            f"<h1>Evaluation report</h1><p>Examples: {metrics.get('examples')}. Gate: {html_lib.escape(verdict)}</p>"
            + "".join(f"<p>{html_lib.escape(note)}</p>" for note in notes)
            + "<table border='1'><tr><th>task</th><th>metric</th><th>value</th>"
            + "".join(f"<th>{name}</th>" for name in compared) + f"</tr>{table}</table>" + stage_html + pictures
            + "</body></html>")
    fileio.atomic_write_text(fileio.join(output_dir, REPORT_HTML), html)


def model_folder(path: str) -> str:
    """A training run folder's ``export/``, or the folder itself (a converted model, a registered copy); it must
    be complete (hold the completion marker its writer puts there last)."""
    from trainer.model.saving import require_complete  # noqa: PLC0415

    export = fileio.join(path, features.EXPORT_DIR)
    return require_complete(export if fileio.exists(export) else path)


def copy_model_encoder(model_dir: str, output_dir: str) -> None:
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    load_encoder(fileio.join(model_folder(model_dir), features.ENCODER_DIR)).save(output_dir)


MODEL_NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_model_name(display_name: str) -> str:
    """A model's display name names a folder of the local registry: one path component, nothing that climbs."""
    if not MODEL_NAME.fullmatch(display_name or "") or display_name in (".", ".."):
        raise ValueError(f"model_display_name {display_name!r}: use letters, digits, '-', '_' and '.' only (not "
                         f"'.' or '..'; it names a folder in the registry), e.g. kjv-v2")
    return display_name


def _versions(root: str) -> list[int]:
    """The version numbers of a local registry entry (its ``v<N>`` folders)."""
    if not os.path.isdir(root):
        return []
    return sorted(int(v[1:]) for v in os.listdir(root) if v.startswith("v") and v[1:].isdigit())


def find_champion(registry_dir: str, display_name: str) -> str:
    """The model a new one is compared with: the latest version in the local registry; '' when none."""
    if not registry_dir:
        return ""
    root = os.path.join(registry_dir, check_model_name(display_name))
    versions = _versions(root)
    return os.path.join(root, f"v{versions[-1]}") if versions else ""


def find_vertex_champion(project: str, region: str, display_name: str) -> str:
    """The model a new one is compared with, from the Vertex AI Model Registry: the export folder (in
    ``model_store``, see :func:`publish_export`) of the latest model uploaded under ``display_name``; '' when
    none. A model registered by other means (its artifact is not an export's ``serving/``) is an error, not a
    silent skip: the gate would otherwise compare with nothing."""
    from google.cloud import aiplatform  # noqa: PLC0415

    aiplatform.init(project=project, location=region)
    models = aiplatform.Model.list(filter=f'display_name="{check_model_name(display_name)}"',
                                   order_by="create_time desc")
    if not models:
        return ""
    uri = (models[0].uri or "").rstrip("/")
    if not uri.startswith("gs://") or not uri.endswith("/" + features.SERVING_DIR):
        raise ValueError(f"champion: the latest model named {display_name!r} ({models[0].resource_name}) has artifact "
                         f"{uri or 'none'!r}, not a bertkeras export's gs://.../{features.SERVING_DIR}; register through "
                         f"this pipeline, or compare with no champion (champion_tolerance: null; schedules: --no_champion)")
    return uri[: -len(features.SERVING_DIR) - 1]


def register_local(model_dir: str, registry_dir: str, display_name: str) -> str:
    """Copies the export into ``<registry_dir>/<display_name>/v<N>/`` (N = next version); -> that folder."""
    import shutil  # noqa: PLC0415

    if not registry_dir:
        raise ValueError("registry_dir: required for local registration")
    root = os.path.join(registry_dir, check_model_name(display_name))
    source = model_folder(model_dir)
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, f"v{max(_versions(root), default=0) + 1}")
    staging = target + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    os.rename(staging, target)
    return target


def register(model_dir: str, project: str, region: str, display_name: str, serving_image: str,
             artifact_uri: str = "", labels: dict | None = None) -> str:
    """Uploads the exported SavedModel to the Vertex AI Model Registry; -> the model's resource name."""
    from google.cloud import aiplatform  # noqa: PLC0415

    aiplatform.init(project=project, location=region)
    uri = artifact_uri or fileio.join(model_dir, features.EXPORT_DIR, features.SERVING_DIR)
    if not uri.startswith("gs://"):
        raise ValueError(f"register: the model must be on GCS for Vertex AI, got {uri}")
    if not artifact_uri:
        from trainer.model.saving import require_complete  # noqa: PLC0415

        require_complete(fileio.join(model_dir, features.EXPORT_DIR))
    model = aiplatform.Model.upload(display_name=display_name, artifact_uri=uri,
                                    serving_container_image_uri=serving_image, labels=labels or {})
    return model.resource_name


def publish_export(model_uri: str, model_store: str, display_name: str, client=None) -> str:
    """Copies a run's complete ``export/`` from the pipeline root, whose artifacts expire, to
    ``<model_store>/<display_name>/<UTC time>/`` (server-side GCS copies, the completion marker last, so the copy
    is complete exactly when marked); -> the copy's ``serving`` URI, which nothing names before."""
    import datetime  # noqa: PLC0415

    from google.cloud import storage  # noqa: PLC0415

    from trainer.model.saving import require_complete  # noqa: PLC0415

    for name, uri in (("model", model_uri), ("model_store", model_store)):
        if not uri.startswith("gs://"):
            raise ValueError(f"{name}: must be a gs:// folder for Vertex AI, got {uri!r}")
    check_model_name(display_name)
    require_complete(fileio.join(model_uri, features.EXPORT_DIR))
    client = client or storage.Client()
    source_bucket, _, run = model_uri[len("gs://"):].partition("/")
    export = "/".join(p for p in (run.strip("/"), features.EXPORT_DIR) if p) + "/"
    blobs = sorted(client.list_blobs(source_bucket, prefix=export), key=lambda b: b.name == export + features.COMPLETE_FILE)
    if not any(blob.name == f"{export}{features.SERVING_DIR}/saved_model.pb" for blob in blobs):
        raise FileNotFoundError(f"{model_uri}: no {features.EXPORT_DIR}/{features.SERVING_DIR}/saved_model.pb to register")
    store_bucket, _, store = model_store[len("gs://"):].partition("/")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    target = "/".join(p for p in (store.strip("/"), display_name, stamp) if p)
    source, destination = client.bucket(source_bucket), client.bucket(store_bucket)
    for blob in blobs:  # the marker sorts last
        source.copy_blob(blob, destination, f"{target}/{blob.name[len(export):]}")
    return f"gs://{store_bucket}/{target}/{features.SERVING_DIR}"


def register_published(model_uri: str, model_store: str, project: str, region: str, display_name: str,
                       serving_image: str) -> str:
    """The Vertex registration of a pipeline run: its export copied into ``model_store``, then registered."""
    if not model_store:
        raise ValueError("model_store: required for Vertex AI registration (the pipeline root's artifacts expire)")
    artifact_uri = publish_export(model_uri, model_store, display_name)
    return register(model_uri, project, region, display_name, serving_image, artifact_uri=artifact_uri)
