"""Where a run came from: code commit, package versions, seed and data digest.

Recorded as tags on every run, and compared by ``reproduce`` before it re-runs.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "optuna", "mlflow", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of python and the packages that decide a run's numbers."""
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_state(folder: Path) -> tuple[str, bool]:
    """The commit checked out in ``folder`` and whether the tree has changes ("" if not git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "", False
    return commit, dirty
