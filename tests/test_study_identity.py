"""A study's identity: the data and recipe that make its trials' scores comparable."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from satsweep.data import load_data
from satsweep.errors import UserError
from satsweep.search.identity import IDENTITY_ATTR, check_identity, study_identity
from satsweep.search.job import prepare_job


def _identity(tiny: list[str], *overrides: str) -> dict:
    data = [o for o in tiny if not o.startswith("model.")]
    job = prepare_job(["sweep=smoke", *data, *overrides])
    return study_identity(job, load_data(job.base))


@pytest.mark.slow
def test_swept_and_runtime_keys_keep_the_identity(outputs: Path, tiny: list[str]) -> None:
    base = _identity(tiny)
    # smoke sweeps optimizer.lr and the optimizer group: their base values do not count
    assert _identity(tiny, "optimizer.lr=0.5", "trainer.threads=1") == base
    smoothed = _identity(tiny, "trainer.label_smoothing=0.2")["recipe"]
    assert smoothed["trainer.label_smoothing"] == 0.2 != base["recipe"]["trainer.label_smoothing"]
    assert _identity(tiny, "data.image_size=24")["image_shape"] == "24x24x3"
    assert _identity(tiny, "data.classes=[Beach,Port]")["data_digest"] != base["data_digest"]


def test_a_study_keeps_its_first_identity(outputs: Path, tiny: list[str]) -> None:
    study = optuna.create_study(study_name="quick")
    first = _identity(tiny)
    check_identity(study, first)
    assert study.user_attrs[IDENTITY_ATTR] == first
    check_identity(study, first)  # the same sweep again: a resume
    with pytest.raises(
        UserError, match=r"image_shape: \"16x16x3\" -> \"24x24x3\".*sweep\.study_name=quick_aid_2"
    ):
        check_identity(study, _identity(tiny, "data.image_size=24"))
    # a share of the training split scores otherwise; studies made before it had all of it
    assert "train_share" not in first
    with pytest.raises(UserError, match=r"train_share: null -> 0\.5"):
        check_identity(study, _identity(tiny, "data.train_share=0.5"))
    assert study.user_attrs[IDENTITY_ATTR] == first


def test_a_search_may_widen_to_a_fixed_key_but_not_change_it(
    outputs: Path, tiny: list[str]
) -> None:
    study = optuna.create_study(study_name="widen")
    check_identity(study, _identity(tiny))
    check_identity(study, _identity(tiny, "model.dense_units=choice(16, 32)"))  # now swept
    with pytest.raises(UserError, match=r"model.dense_units: 16 -> 64"):
        check_identity(study, _identity(tiny, "model.dense_units=64"))  # fixed elsewhere
