"""Download a dataset archive once, verify its checksum, and unpack it.

Used by ``data=eurosat`` with ``data.download.enabled=true``. A partial or
corrupted download never reaches the dataset folder: the archive is fetched to a
temporary file and moved into place only after its checksum matches.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from satsweep.errors import UserError
from satsweep.schema import DownloadConfig

LOG = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20


def checksum_matches(path: Path, checksum: str) -> bool:
    """Whether a downloaded file has the expected SHA-256, so a broken download is not unpacked."""
    algorithm, expected = checksum.split(":", 1)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest() == expected


def fetch_archive(cfg: DownloadConfig, folder: Path) -> Path:
    """The verified archive in ``folder``, downloading it when absent or corrupt."""
    archive = folder / cfg.filename
    if archive.is_file() and checksum_matches(archive, cfg.checksum):
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    LOG.info("downloading %s to %s", cfg.url, archive)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as part:
        try:
            with urllib.request.urlopen(cfg.url, timeout=60) as response:
                shutil.copyfileobj(response, part, CHUNK_BYTES)
        except OSError as error:
            Path(part.name).unlink(missing_ok=True)
            raise UserError(
                f"cannot download {cfg.url} ({error}): fetch it by hand into {archive}"
            ) from error
    if not checksum_matches(Path(part.name), cfg.checksum):
        Path(part.name).unlink(missing_ok=True)
        raise UserError(
            f"{cfg.url} did not match checksum {cfg.checksum}: the download is corrupt or the "
            "file changed upstream; retry, or set data.download.checksum"
        )
    Path(part.name).replace(archive)
    return archive


def ensure_dataset(cfg: DownloadConfig, dataset_path: Path) -> None:
    """Make ``dataset_path`` (the archive's ``subdir`` after unpacking) exist."""
    if dataset_path.is_dir():
        return
    folder = dataset_path.parent if dataset_path.name == cfg.subdir else dataset_path
    archive = fetch_archive(cfg, folder)
    with zipfile.ZipFile(archive) as bundle:
        unsafe = [n for n in bundle.namelist() if n.startswith("/") or ".." in Path(n).parts]
        if unsafe:
            raise UserError(f"{archive} holds unsafe path {unsafe[0]!r}: refusing to unpack")
        bundle.extractall(folder)
    if not dataset_path.is_dir():
        raise UserError(
            f"{archive} has no folder {cfg.subdir!r}: set data.download.subdir to its top folder"
        )
