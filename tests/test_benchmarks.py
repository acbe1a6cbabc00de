"""``make bench`` keeps working: its cheapest benchmarks, run for real, write their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from satsweep.benchmarks.harness import alternate
from tests.conftest import REPO


def _bench(module: list[str], extra: list[str], outputs) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ...`` as make runs it, its outputs in ``outputs``."""
    return subprocess.run(
        [sys.executable, "-m", *module, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SATSWEEP_OUTPUTS": str(outputs)},
    )


def test_alternate_swaps_the_order_every_repeat() -> None:
    calls: list[str] = []
    a_values, b_values = alternate(
        lambda: calls.append("a") or 1.0, lambda: calls.append("b") or 2.0, 3
    )
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert a_values == [1.0] * 3 and b_values == [2.0] * 3


@pytest.mark.slow
def test_bench_writes_a_table_of_ratios(tmp_path, shared_cache) -> None:
    result = _bench(
        ["satsweep.benchmarks", "--repeats", "1", "--only", "startup", "cache"],
        ["data.max_per_class=10"],  # an override after the names is not a name
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data cache" in result.stdout and "satsweep --help" in result.stdout
    record = json.loads((tmp_path / "bench" / "latest.json").read_text())
    names = [row["name"] for row in record["rows"]]
    assert names == ["answer to `satsweep --help`", "answer to config error", "data cache"]
    cache = record["rows"][2]
    assert cache["ratio"] == cache["b"] / cache["a"] > 1  # reading the cache beats decoding
    assert record["machine"]["cpu_count"]


@pytest.mark.slow
def test_an_unknown_benchmark_is_named_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "satsweep.benchmarks", "--only", "cache", "thruput"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2
    assert "--only thruput: no such benchmark; choose from startup" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bn_lag_scores_every_epoch_both_ways_and_leaves_the_run_as_trained(outputs, tiny) -> None:
    from satsweep.api import train
    from satsweep.benchmarks.bn_lag import measure

    scores, metrics = measure(tiny)
    assert [row.epoch for row in scores] == [1, 2]
    assert all(0 <= row.moving <= 1 and 0 <= row.recomputed <= 1 for row in scores)
    # the probe puts the moving averages back: the same run without it scores the same
    plain = train([*tiny, "trainer.precise_bn_images=0", "tracking.experiment=plain"])
    assert metrics["test_f1_macro"] == plain.metrics["test_f1_macro"]
    assert metrics["final_val_loss"] == plain.metrics["final_val_loss"]


def test_the_fidelity_judge_ranks_and_measures_the_regret() -> None:
    from satsweep.benchmarks.fidelity import Pair, judge

    pairs = [Pair([str(i)], low, high, 1.0, 4.0) for i, (low, high) in
             enumerate([(0.5, 0.70), (0.4, 0.75), (0.3, 0.60), (0.2, 0.55)])]  # fmt: skip
    verdict = judge(pairs, maximize=True)
    assert verdict.spearman == pytest.approx(0.8)  # one swap among four
    assert verdict.cheap_winner_high == 0.70 and verdict.regret == pytest.approx(0.05)


@pytest.mark.slow
def test_bench_fidelity_trains_each_drawn_config_at_both_fidelities(tmp_path, sweep_args) -> None:
    """Two configurations of the smoke sweep, on real images, at 16 px and at 24 px."""
    result = _bench(
        ["satsweep.benchmarks.fidelity", *sweep_args],
        ["bench.configs=2", "bench.high=[data.image_size=24]"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "bench" / "fidelity-latest.json").read_text())
    assert len(record["pairs"]) == 2 and "data.image_size=24" in record["title"]
    first, second = record["pairs"]
    assert first["overrides"] != second["overrides"]  # two draws from the space
    assert all(0.0 <= p["low"] <= 1.0 and 0.0 <= p["high"] <= 1.0 for p in record["pairs"])
    assert "Spearman's rho" in result.stdout
