"""What a study searched: its data and the settings that make its trials' scores comparable.

A study name is only a name: a second sweep under it, on other images or with
another recipe, would add trials whose scores mean something else, and TPE, the
leaderboard, the floor and the final fit would mix both. The launcher stores the
study's identity when the study is new and refuses a sweep whose identity
differs, naming what differs and how to start a separate study.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from satsweep.data import Dataset
from satsweep.errors import UserError
from satsweep.search.job import SweepJob

IDENTITY_ATTR = "satsweep_identity"  # study: see study_identity
# How a run is executed, not what it learns: changing them keeps scores comparable.
_RUNTIME_KEYS = ("trainer.threads", "trainer.verbose", "trainer.eval_batch_size")


def study_identity(job: SweepJob, dataset: Dataset) -> dict[str, Any]:
    """The study's data (digest, classes, image shape, split) and its recipe.

    The recipe is the base config's model, optimizer and trainer and the seed,
    less the swept keys (each trial sets those) and the runtime keys.
    """
    data = job.base.data
    recipe = job.base.model_dump(mode="json", include={"model", "optimizer", "trainer", "seed"})
    for key in [*(d.key for d in job.space.dimensions), *_RUNTIME_KEYS]:
        recipe = _without(recipe, key.lstrip("+~").split("."))
    return {
        "data": data.name,
        "data_digest": dataset.digest[:16],
        "classes": len(dataset.class_names),
        "image_shape": "x".join(str(size) for size in dataset.image_shape),
        "split": data.split.model_dump(mode="json"),
        "max_per_class": data.max_per_class,
        "max_images": data.max_images,
        # studies made before data.train_share trained on whole training splits
        **({"train_share": data.train_share} if data.train_share < 1 else {}),
        "objectives": list(job.settings.objectives),
        "recipe": _flat(recipe),
    }


def check_identity(study: optuna.Study, identity: dict[str, Any]) -> None:
    """Store the identity of a new study; refuse a sweep that would mix in other trials.

    A study made before identities were stored adopts the first one it sees.
    """
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
        return
    differ = _differences(_flat(stored), _flat(identity))
    if not differ:
        return
    raise UserError(
        f"study {study.study_name!r} searched other data or settings ({'; '.join(differ)}): "
        "their trials would not compare; start a separate study with "
        f"sweep.study_name={study.study_name}_{identity['data']}_2 (or another name)"
    )


def _differences(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: stored -> now`` for each key whose value differs, recipe keys unprefixed.

    A recipe key that one side sweeps (absent from its recipe) is no difference: a
    search may widen to a key it held fixed, or fix one it swept.
    """
    keys = sorted(set(stored) | set(now), key=lambda key: (key.startswith("recipe."), key))
    keys = [key for key in keys if not key.startswith("recipe.") or (key in stored and key in now)]
    return [
        f"{key.removeprefix('recipe.')}: {json.dumps(stored.get(key))} -> "
        f"{json.dumps(now.get(key))}"
        for key in keys
        if stored.get(key) != now.get(key)
    ][:4]


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``: differences name the key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _without(tree: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """``tree`` less the key at ``path`` (a swept group, e.g. ``model``, drops its node)."""
    head, *rest = path
    if head not in tree:
        return tree
    if not rest:
        return {key: value for key, value in tree.items() if key != head}
    child = tree[head]
    if not isinstance(child, dict):
        return tree
    return {**tree, head: _without(child, rest)}
