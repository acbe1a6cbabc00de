"""Search spaces in Hydra's override grammar, turned into Optuna distributions.

``optimizer.lr: tag(log, interval(1e-4, 1e-1))`` is parsed by Hydra's own override
parser, never by hand. A dimension may hold only under a config-group choice
(``conditional: {"optimizer=sgd": {optimizer.momentum: ...}}``): Optuna's
define-by-run API then suggests it only in the trials where that choice was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from satsweep.config import spell
from satsweep.errors import UserError

Primitive = None | bool | int | float | str
# The Optuna distributions a sweep file can spell: choice(), range() and interval().
Distribution = CategoricalDistribution | IntDistribution | FloatDistribution


@dataclass(frozen=True)
class Dimension:
    """One swept key: its distribution, and the group choice it depends on, if any."""

    key: str
    distribution: Distribution
    spellings: Mapping[Primitive, str]  # categorical value -> its override spelling
    condition: tuple[str, str] | None = None

    def override(self, value: Any) -> str:
        """The Hydra override that sets this dimension to ``value``."""
        spelled = self.spellings.get(value) if isinstance(value, str) else None
        return f"{self.key}={spelled if spelled is not None else spell(value)}"

    def value_of(self, spelled: str) -> Any:
        """The value whose override spelling is ``spelled`` (a condition's option), or None."""
        candidates = (
            self.distribution.choices
            if isinstance(self.distribution, CategoricalDistribution)
            else _numbers(spelled)
        )
        for value in candidates:
            if self.override(value) == f"{self.key}={spelled}":
                return value
        return None

    def extremes(self) -> list[Any]:
        """Values at the edges of the distribution, to validate before any training."""
        if isinstance(self.distribution, CategoricalDistribution):
            return list(self.distribution.choices)
        return [self.distribution.low, self.distribution.high]


@dataclass(frozen=True)
class SearchSpace:
    """The swept keys of a sweep, in order, each with its distribution and condition."""

    dimensions: tuple[Dimension, ...]

    def suggest(self, trial: optuna.trial.BaseTrial) -> list[str]:
        """Overrides for one trial; conditional keys only when their condition holds."""
        chosen: dict[str, Any] = {}
        overrides = []
        for dimension in self.dimensions:
            if dimension.condition is not None:
                group, option = dimension.condition
                if _spelling(self, group, chosen.get(group)) != option:
                    continue
            value = _suggest(trial, dimension.key, dimension.distribution)
            chosen[dimension.key] = value
            overrides.append(dimension.override(value))
        return overrides

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every dimension, for Optuna's GridSampler."""
        grid = {}
        for dimension in self.dimensions:
            distribution = dimension.distribution
            if isinstance(distribution, CategoricalDistribution):
                grid[dimension.key] = list(distribution.choices)
            elif distribution.step is not None and not distribution.log:
                count = round((distribution.high - distribution.low) / distribution.step) + 1
                grid[dimension.key] = [
                    distribution.low + i * distribution.step for i in range(count)
                ]
            else:
                raise UserError(
                    f"sweep.params {dimension.key}: the grid sampler needs choice() or range(), "
                    "not interval(): change the parameter or the sampler"
                )
        return grid

    def keys(self) -> list[str]:
        """The config keys the space sweeps, as the sweep file names them."""
        return [d.key for d in self.dimensions]

    def dimension(self, key: str) -> Dimension:
        """The dimension of ``key`` (which must be in the space)."""
        return next(d for d in self.dimensions if d.key == key)


def _suggest(trial: optuna.trial.BaseTrial, key: str, distribution: Distribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            key, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_float(
        key, distribution.low, distribution.high, step=distribution.step, log=distribution.log
    )


def _numbers(text: str) -> list[int | float]:
    """``text`` read as an int and as a float, where it reads as either."""
    numbers: list[int | float] = []
    for kind in (int, float):
        try:
            numbers.append(kind(text))
        except ValueError:
            continue
    return numbers


def _spelling(space: SearchSpace, key: str, value: Any) -> str | None:
    for dimension in space.dimensions:
        if dimension.key == key and value is not None:
            return dimension.override(value).split("=", 1)[1]
    return None


def parse_space(
    params: Mapping[str, str], conditional: Mapping[str, Mapping[str, str]], origin: str
) -> SearchSpace:
    """Parse a sweep file's ``params`` and ``conditional`` sections (``origin`` names the file)."""
    parser = OverridesParser.create()
    dimensions = [_dimension(parser, key, expr, None, origin) for key, expr in params.items()]
    for condition, block in conditional.items():
        when = _parse(parser, condition, origin, "conditional")
        group, option = when.key_or_group, when.get_value_element_as_str()
        if group not in params:
            raise UserError(
                f"{origin}: condition {condition!r} refers to {group}, which is not swept: "
                f"add {group} to sweep.params"
            )
        dimensions += [
            _dimension(parser, key, expr, (group, option), origin) for key, expr in block.items()
        ]
    return SearchSpace(tuple(dimensions))


def _parse(parser: OverridesParser, text: str, origin: str, where: str) -> Override:
    try:
        return parser.parse_override(text)
    except HydraException as error:
        detail = " ".join(str(error).split()).split(" See https://")[0]
        raise UserError(f"{origin}: bad {where} entry {text!r}: {detail}") from error


def _dimension(
    parser: OverridesParser,
    key: str,
    expression: str,
    condition: tuple[str, str] | None,
    origin: str,
) -> Dimension:
    override = _parse(parser, f"{key}={expression}", origin, "sweep parameter")
    sweep = override.value()
    where = f"{origin}: parameter {key}"
    if isinstance(sweep, ChoiceSweep):
        spellings = dict(
            zip(
                [_primitive(v, where) for v in sweep.list],
                override.sweep_string_iterator(),
                strict=True,
            )
        )
        return Dimension(key, CategoricalDistribution(list(spellings)), spellings, condition)
    if isinstance(sweep, RangeSweep):
        return Dimension(key, _range_distribution(sweep, where), {}, condition)
    if isinstance(sweep, IntervalSweep):
        return Dimension(key, _interval_distribution(sweep, where), {}, condition)
    raise UserError(
        f"{where}: {expression!r} is a fixed value, not a search space: use choice(...), "
        "range(...) or interval(...), or fix it in the sweep file's base config"
    )


def _range_distribution(sweep: RangeSweep, where: str) -> Distribution:
    values = list(sweep.range())
    if not values:
        raise UserError(f"{where}: the range is empty: check its start, stop and step")
    integers = all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step))
    if "log" in sweep.tags:
        if not integers or sweep.step != 1:  # Optuna samples log-scale only without a step
            listed = ", ".join(f"{v:g}" for v in values)
            span = f"interval({values[0]:g}, {values[-1]:g})"
            raise UserError(
                f"{where}: a log-scale range cannot keep its step {sweep.step:g}: use "
                f"choice({listed}) for these values, or "
                f"tag(log{', int' if integers else ''}, {span}) for the whole span"
            )
        if values[0] < 1:
            raise UserError(f"{where}: a log-scale range must start at 1 or above, not {values[0]}")
        return IntDistribution(int(values[0]), int(values[-1]), log=True)
    if integers:
        return IntDistribution(int(values[0]), int(values[-1]), step=int(sweep.step))
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(sweep.step))


def _interval_distribution(sweep: IntervalSweep, where: str) -> Distribution:
    assert sweep.start is not None and sweep.end is not None
    if sweep.start >= sweep.end:
        raise UserError(f"{where}: interval start {sweep.start} is not below its end {sweep.end}")
    log = "log" in sweep.tags
    if log and sweep.start <= 0:
        raise UserError(f"{where}: a log interval must start above 0, not at {sweep.start}")
    if "int" in sweep.tags:
        return IntDistribution(int(sweep.start), int(sweep.end), log=log)
    return FloatDistribution(float(sweep.start), float(sweep.end), log=log)


def _primitive(value: Any, where: str) -> Primitive:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "text"):  # a quoted string
        return str(value.text)
    raise UserError(f"{where}: choices must be plain values, not {value!r}")
