"""Files that appear whole or not at all.

Parallel workers and sweeps fill the same cache entries, and workers read the
job file their launcher writes: a reader must never see half a file. Each file
is written beside its destination, then renamed over it (atomic on POSIX).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary stream that becomes ``path`` when the block ends without an error.

    The stream's file is readable by its owner only (``mkstemp``), so a job file
    that names stores stays private; a failed write leaves nothing behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)  # gone once replaced; a failed write's leftover
