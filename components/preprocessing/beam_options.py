"""Beam pipelines from a step's typed config. The runner is always chosen explicitly, and ``DirectRunner``
means Beam's Python FnApiRunner: Beam 2.77's DirectRunner would first try to download and start the Prism
runner for pipelines it deems compatible (a network fetch, and other semantics than the tests saw). Extra
``--flag=value`` Beam arguments pass through, so the same step runs on DataflowRunner with ``--runner
DataflowRunner --project ... --region ... --temp_location gs://... --setup_file ./setup.py`` (or
``--sdk_container_image``)."""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def pipeline_options(runner: str, num_workers: int, beam_args: Sequence[str] = ()) -> PipelineOptions:
    args = [f"--runner={runner}", *beam_args]
    if runner == "DirectRunner":
        if num_workers > 1:
            args += [f"--direct_num_workers={num_workers}", "--direct_running_mode=multi_processing"]
        else:
            args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    return PipelineOptions(args)


def make_pipeline(runner: str, num_workers: int, beam_args: Sequence[str] = ()) -> beam.Pipeline:
    options = pipeline_options(runner, num_workers, beam_args)
    if options.get_all_options()["runner"] != "DirectRunner":
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # what DirectRunner does once it has ruled Prism out: the options travel to the SDK workers
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)
