"""Counts Hydra compositions in every satsweep process a test starts.

A test puts this folder on ``PYTHONPATH`` and names a file in
``$SATSWEEP_TEST_COMPOSE_TRACE``; each process appends one line per call to
``hydra.compose``: its pid, its command and what asked for the composition
(``job``: a sweep's job, ``job-check``: the job checking its space, ``trial``:
anything else, such as one trial's config). The real ``hydra.compose`` runs.
"""

from __future__ import annotations

import os
import sys
import traceback

TRACE = os.environ.get("SATSWEEP_TEST_COMPOSE_TRACE")

if TRACE:
    import hydra

    _compose = hydra.compose

    def _traced(*args, **kwargs):  # type: ignore[no-untyped-def]
        names = {frame.name for frame in traceback.extract_stack()}
        kind = "trial"
        if "prepare_job" in names:
            kind = "job-check" if names & {"_check_space", "_check_dimension"} else "job"
        command = sys.argv[1] if len(sys.argv) > 1 else "?"
        with open(TRACE, "a") as trace:
            trace.write(f"{os.getpid()}\t{command}\t{kind}\n")
        return _compose(*args, **kwargs)

    hydra.compose = _traced
