"""Closing a sweep that no launcher watches: workers started by hand, by SLURM or Kubernetes.

``satsweep sweep`` ends its sweep itself: the floor, the final fit, the record on
the parent run. Workers started without it (``satsweep worker``, see
docs/scale-out.md) leave that to the last of them: the one that finds the budget
spent and no trial running closes the sweep, unless a launcher watches the
study. The final fit's own claim keeps a second closer from training it again.
"""

from __future__ import annotations

import logging

from satsweep.data import load_data
from satsweep.search.attach import Attached, Budget
from satsweep.search.final_fit import run_final_fit
from satsweep.search.job import SweepJob
from satsweep.search.ledger import CLOSED_ATTR, FINISHED_STATES, LAUNCHER_ATTR
from satsweep.search.record import finalize, record_floor_once
from satsweep.search.stopping import StopRequest
from satsweep.search.storage import budget_lock, owner_gone, worker_identity

LOG = logging.getLogger(__name__)


def close_without_launcher(job: SweepJob, attached: Attached, stop: StopRequest) -> bool:
    """Close the sweep if this worker is the last and no launcher watches; whether it did."""
    study = attached.study
    with budget_lock(job.base.storage, job.settings.study_name):
        left, running = Budget(job.settings.n_trials, None).remaining(study)
        launcher = str(study.user_attrs.get(LAUNCHER_ATTR) or "")
        finished = sum(t.state in FINISHED_STATES for t in study.get_trials(deepcopy=False))
        closed = study.user_attrs.get(CLOSED_ATTR) or {}
        if left > 0 or running or (launcher and not owner_gone(launcher)):
            return False
        if closed.get("finished") == finished:  # another worker closed this round
            return False
        study.set_user_attr(CLOSED_ATTR, {"finished": finished, "by": worker_identity()})
    LOG.info("the budget is spent and no launcher watches: this worker closes the sweep")
    dataset = load_data(job.base)
    record_floor_once(job, attached, dataset)
    if job.settings.final_fit.enabled:
        run_final_fit(job, attached, stop)
    finalize(job, attached, "FINISHED", dataset)
    return True
