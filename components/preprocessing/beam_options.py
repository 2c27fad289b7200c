"""Beam pipeline options from a step's typed config: the runner is always chosen explicitly (Beam 2.77 would
otherwise try to download the Prism runner), and extra ``--flag=value`` Beam arguments pass through, so the
same step runs on DataflowRunner with ``--runner DataflowRunner --project ... --region ... --temp_location
gs://... --setup_file ./setup.py`` (or ``--sdk_container_image``)."""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions


def pipeline_options(runner: str, num_workers: int, beam_args: Sequence[str] = ()) -> PipelineOptions:
    args = [f"--runner={runner}", *beam_args]
    if runner == "DirectRunner":
        if num_workers > 1:
            args += [f"--direct_num_workers={num_workers}", "--direct_running_mode=multi_processing"]
        else:
            args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    return PipelineOptions(args)
