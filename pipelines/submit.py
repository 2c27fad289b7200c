"""Submitting and scheduling compiled pipelines: Vertex AI Pipelines (``aiplatform.PipelineJob``,
``PipelineJobSchedule``) or a Kubeflow Pipelines server (``kfp.Client``). Everything comes from the typed
config (never from the environment); requests are checked before anything is sent."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import tempfile
from typing import Literal

from trainer.config import Config, ConfigError, option

Target = Literal["vertex", "kubeflow"]


@dataclasses.dataclass(frozen=True)
class SubmitConfig(Config):
    """Where a pipeline runs."""

    target: Target = option("vertex", "vertex (Vertex AI Pipelines) or kubeflow (a KFP server)")
    project: str = option("", "Google Cloud project (vertex)")
    region: str = option("", "Vertex AI region, e.g. us-central1 (vertex)")
    pipeline_root: str = option("", "gs:// folder for the pipeline's artifacts (vertex: required)")
    service_account: str = option("", "service account the pipeline runs as (vertex: required; `terraform output service_accounts`: pipelines); its jobs run as PipelineConfig.service_accounts")
    network: str = option("", "VPC network (projects/<number>/global/networks/<name>), optional")
    labels: tuple[str, ...] = option((), "labels KEY=VALUE")
    enable_caching: bool = option(True, "reuse outputs of unchanged steps (steps that are not deterministic never cache)")
    host: str = option("", "KFP server URL (kubeflow)")
    experiment: str = option("bertkeras", "KFP experiment name (kubeflow)")
    display_name: str = option("", "run display name (default: the pipeline name and a timestamp)")

    def check(self) -> list[str]:
        errors = []
        if self.target == "vertex":
            for name in ("project", "region", "pipeline_root"):
                if not getattr(self, name):
                    errors.append(f"{name}: required to submit to Vertex AI")
            if not self.service_account:
                errors.append("service_account: required to submit to Vertex AI (the run would otherwise use the "
                              "Compute Engine default service account), e.g. bertkeras-pipelines@P.iam.gserviceaccount.com")
            if self.pipeline_root and not self.pipeline_root.startswith("gs://"):
                errors.append(f"pipeline_root: must be a gs:// folder for Vertex AI, got {self.pipeline_root!r}")
        elif not self.host:
            errors.append("host: the KFP server URL is required with target=kubeflow")
        for label in self.labels:
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}=[a-z0-9_-]{0,63}", label):
                errors.append(f"labels: {label!r} is not KEY=VALUE with lower-case letters, digits, _ or -")
        return errors

    def label_dict(self) -> dict[str, str]:
        return dict(label.split("=", 1) for label in self.labels)


@dataclasses.dataclass(frozen=True)
class RetrainingSchedule(Config):
    """A recurring run of a pipeline."""

    cron: str = option("", "cron expression (5 fields, UTC unless prefixed 'TZ=Area/City '), e.g. '0 3 * * 1'")
    display_name: str = option("bertkeras-retraining", "schedule name")
    max_concurrent_runs: int = option(1, "runs allowed at the same time")
    start_time: str = option("", "RFC 3339 start, e.g. 2027-01-01T00:00:00Z ('' = now)")
    end_time: str = option("", "RFC 3339 end ('' = never)")
    max_runs: int = option(0, "stop after this many runs (0 = no limit)")
    champion_tolerance: float | None = option(
        0.02, "retraining compares with the registered model by default: the pipeline's champion_tolerance when "
        "its config sets none (a new version is registered only if no gated metric falls more than this below the "
        "champion's); null (`schedule create --no_champion`): as the pipeline config says")

    def check(self) -> list[str]:
        errors = [f"cron: {e}" for e in cron_errors(self.cron)]
        if self.max_concurrent_runs < 1:
            errors.append(f"max_concurrent_runs: must be >= 1, got {self.max_concurrent_runs}")
        if self.champion_tolerance is not None and self.champion_tolerance < 0:
            errors.append(f"champion_tolerance: must be >= 0 (or null), got {self.champion_tolerance}")
        for name in ("start_time", "end_time"):
            value = getattr(self, name)
            if value:
                try:
                    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    errors.append(f"{name}: not an RFC 3339 time: {value!r}")
        return errors


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def cron_errors(cron: str) -> list[str]:
    """Problems of a 5-field cron expression (numbers, ranges, lists, steps, *); [] when valid."""
    text = cron.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        text = text.split(" ", 1)[1] if " " in text else ""
    fields = text.split()
    if len(fields) != 5:
        return [f"{cron!r} must have 5 fields (minute hour day-of-month month day-of-week), has {len(fields)}"]
    errors = []
    for value, (name, low, high) in zip(fields, _CRON_FIELDS):
        for part in value.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                errors.append(f"{cron!r}: bad step {step!r} in the {name} field")
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
                errors.append(f"{cron!r}: {part!r} is not a number, range or * in the {name} field")
                continue
            if not all(low <= int(b) <= high for b in bounds):
                errors.append(f"{cron!r}: {part!r} is outside {low}-{high} in the {name} field")
    return errors


# --- staging -------------------------------------------------------------------------------------------------
def stage_template(local_path: str, pipeline_root: str, name: str, client=None) -> str:
    """Uploads a compiled pipeline to ``<pipeline_root>/templates/`` with google-cloud-storage; -> its gs:// URI."""
    from google.cloud import storage  # noqa: PLC0415

    bucket_name, _, prefix = pipeline_root[len("gs://"):].partition("/")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    blob_name = "/".join(p for p in (prefix.strip("/"), "templates", f"{name}-{stamp}.yaml") if p)
    client = client or storage.Client()
    blob = client.bucket(bucket_name).blob(blob_name)
    blob.upload_from_filename(local_path, content_type="application/x-yaml")
    return f"gs://{bucket_name}/{blob_name}"


def _compiled(pipeline_config, target: str, tmp: str) -> str:
    from pipelines.definitions import compile_pipeline  # noqa: PLC0415

    return compile_pipeline(pipeline_config, os.path.join(tmp, "pipeline.yaml"), target=target)


def _parameters(submit: SubmitConfig, overrides: dict | None) -> dict:
    params = {"project": submit.project, "region": submit.region} if submit.target == "vertex" else {}
    return {**params, **(overrides or {})}


def _vertex_job(pipeline_config, submit: SubmitConfig, parameters: dict | None, tmp: str, storage_client=None):
    from google.cloud import aiplatform  # noqa: PLC0415

    name = f"bertkeras-{pipeline_config.pipeline}"
    template = stage_template(_compiled(pipeline_config, "vertex", tmp), submit.pipeline_root, name, storage_client)
    aiplatform.init(project=submit.project, location=submit.region)
    return aiplatform.PipelineJob(
        display_name=submit.display_name or name, template_path=template, pipeline_root=submit.pipeline_root,
        parameter_values=_parameters(submit, parameters), enable_caching=submit.enable_caching,
        labels=submit.label_dict(), project=submit.project, location=submit.region,
    )


def submit(pipeline_config, submit_config: SubmitConfig, parameters: dict | None = None, storage_client=None) -> dict:
    """Compiles, stages and submits one run; -> {target, run id/resource name}."""
    submit_config.validate()
    with tempfile.TemporaryDirectory() as tmp:
        if submit_config.target == "vertex":
            job = _vertex_job(pipeline_config, submit_config, parameters, tmp, storage_client)
            job.submit(service_account=submit_config.service_account or None, network=submit_config.network or None)
            return {"target": "vertex", "resource_name": job.resource_name}
        import kfp  # noqa: PLC0415

        client = kfp.Client(host=submit_config.host)
        run = client.create_run_from_pipeline_package(
            _compiled(pipeline_config, "kubeflow", tmp), arguments=parameters or {},
            run_name=submit_config.display_name or f"bertkeras-{pipeline_config.pipeline}",
            experiment_name=submit_config.experiment, enable_caching=submit_config.enable_caching,
            service_account=submit_config.service_account or None,
        )
        return {"target": "kubeflow", "run_id": run.run_id}


def create_schedule(pipeline_config, submit_config: SubmitConfig, schedule: RetrainingSchedule,
                    parameters: dict | None = None, storage_client=None) -> dict:
    submit_config.validate()
    schedule.validate()
    if (pipeline_config.champion_tolerance is None and schedule.champion_tolerance is not None
            and pipeline_config.pipeline != "pretraining"):  # a pretraining pipeline registers nothing
        pipeline_config = dataclasses.replace(pipeline_config, champion_tolerance=schedule.champion_tolerance).validate()
    with tempfile.TemporaryDirectory() as tmp:
        if submit_config.target == "vertex":
            job = _vertex_job(pipeline_config, submit_config, parameters, tmp, storage_client)
            created = job.create_schedule(
                cron=schedule.cron, display_name=schedule.display_name,
                start_time=schedule.start_time or None, end_time=schedule.end_time or None,
                max_run_count=schedule.max_runs or None, max_concurrent_run_count=schedule.max_concurrent_runs,
                service_account=submit_config.service_account or None, network=submit_config.network or None,
            )
            return {"target": "vertex", "resource_name": created.resource_name,
                    "champion_tolerance": pipeline_config.champion_tolerance}
        import kfp  # noqa: PLC0415

        client = kfp.Client(host=submit_config.host)
        experiment = client.create_experiment(submit_config.experiment)
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=schedule.display_name, cron_expression=_kfp_cron(schedule.cron),
            max_concurrency=schedule.max_concurrent_runs, pipeline_package_path=_compiled(pipeline_config, "kubeflow", tmp),
            params=parameters or {}, start_time=schedule.start_time or None, end_time=schedule.end_time or None,
            enable_caching=submit_config.enable_caching, service_account=submit_config.service_account or None,
        )
        return {"target": "kubeflow", "recurring_run_id": recurring.recurring_run_id,
                "champion_tolerance": pipeline_config.champion_tolerance}


def _kfp_cron(cron: str) -> str:
    """KFP recurring runs take 6-field cron (with seconds)."""
    return "0 " + cron.split(" ", 1)[1] if cron.startswith(("TZ=", "CRON_TZ=")) else "0 " + cron


def manage_schedules(submit_config: SubmitConfig, action: str, name: str = "") -> list[dict]:
    """list, or pause / resume / delete one schedule (Vertex resource name or KFP recurring-run id)."""
    if action not in ("list", "pause", "resume", "delete"):
        raise ConfigError(f"action: one of list, pause, resume, delete; got {action!r}")
    if action != "list" and not name:
        raise ConfigError(f"{action}: give the schedule's name (see `list`)")
    for field in (("project", "region") if submit_config.target == "vertex" else ("host",)):
        if not getattr(submit_config, field):
            raise ConfigError(f"{field}: required to manage schedules on {submit_config.target}")
    if submit_config.target == "vertex":
        from google.cloud import aiplatform  # noqa: PLC0415

        aiplatform.init(project=submit_config.project, location=submit_config.region)
        if action == "list":
            return [{"name": s.resource_name, "display_name": s.display_name, "cron": s.cron, "state": s.state.name}
                    for s in aiplatform.PipelineJobSchedule.list()]
        schedule = aiplatform.PipelineJobSchedule.get(name)
        getattr(schedule, action)()
        return [{"name": name, "action": action}]
    import kfp  # noqa: PLC0415

    client = kfp.Client(host=submit_config.host)
    if action == "list":
        response = client.list_recurring_runs(page_size=100)
        return [{"name": r.recurring_run_id, "display_name": r.display_name, "status": str(r.status)}
                for r in (response.recurring_runs or [])]
    {"pause": client.disable_recurring_run, "resume": client.enable_recurring_run,
     "delete": client.delete_recurring_run}[action](name)
    return [{"name": name, "action": action}]
