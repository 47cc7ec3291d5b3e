"""A Beam job service for the tests and the bench: a portable job server, as Flink's or Spark's
is, that runs jobs on Beam's FnApiRunner with ``--direct_num_workers`` SDK workers.

Why not ``--job_endpoint=embed``: the embedded job service (Beam 2.77,
``local_job_service.BeamJob._invoke_runner``) runs ``FnApiRunner.run_via_runner_api``, which never
reads ``--direct_num_workers``: every job gets one SDK worker whatever the option says (measured:
the worker pool was asked for one worker). This service is Beam's own ``LocalJobServicer`` with a
job type (its documented ``beam_job_type`` hook) that gives the runner the option's worker count;
with ``--environment_type=EXTERNAL`` each of those workers is started by the worker pool.

Run: ``python tests/beam_job_service.py --port PORT`` (serves until killed).
"""

from __future__ import annotations

import argparse
import time

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner


class WorkersJob(local_job_service.BeamJob):
    """A job whose runner starts ``--direct_num_workers`` SDK workers (at least 1)."""

    def _invoke_runner(self):
        self.set_state(beam_job_api_pb2.JobState.RUNNING)
        options = self.pipeline_options()
        runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
        # What FnApiRunner.run_pipeline sets from the same option; run_via_runner_api skips it.
        # The option arrives through the job API as text.
        runner._num_workers = max(1, int(options.view_as(DirectOptions).direct_num_workers or 1))
        return runner.run_via_runner_api(self._pipeline_proto, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    servicer = local_job_service.LocalJobServicer(beam_job_type=WorkersJob)
    port = servicer.start_grpc_server(args.port)
    print(f"job service listening on localhost:{port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
