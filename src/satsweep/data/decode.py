"""Decode a catalog's files in parallel, skipping the ones that cannot be read."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from satsweep.data.cache import DecodedArrays
from satsweep.data.catalog import Catalog
from satsweep.data.images import DECODE_ERRORS, Decoded, decode
from satsweep.errors import UserError

LOG = logging.getLogger(__name__)
NAMED_IN_WARNING = 3


def decode_catalog(catalog: Catalog, image_size: int) -> DecodedArrays:
    """Every readable file of ``catalog`` as an array; unreadable ones are skipped and named."""

    def attempt(source: str) -> Decoded | None:
        try:
            return decode(Path(source), image_size)
        except DECODE_ERRORS:
            return None

    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor() as pool:
        decoded = list(pool.map(attempt, catalog.sources))
    keep = [i for i, image in enumerate(decoded) if image is not None]
    skipped = tuple(catalog.sources[i] for i, image in enumerate(decoded) if image is None)
    warn_skipped(skipped)
    if not keep:
        raise UserError(f"no readable images under {catalog.root}: check the files' format")
    _warn_nodata({catalog.sources[i]: image.nodata for i, image in enumerate(decoded) if image})
    images = np.stack([image.pixels for image in decoded if image is not None])
    return DecodedArrays(
        images=images,
        labels=catalog.labels[keep],
        sources=np.asarray([catalog.sources[i] for i in keep], dtype=str),
        skipped=skipped,
    )


def _warn_nodata(nodata: dict[str, int]) -> None:
    """One warning for the images whose NaN or infinite pixels were filled with black."""
    holding = [source for source, count in nodata.items() if count]
    if holding:
        named = ", ".join(holding[:NAMED_IN_WARNING])
        LOG.warning(
            "%d image(s) hold nodata pixels (NaN or infinite; %d pixels in all), filled with "
            "black: %s%s",
            len(holding),
            sum(nodata.values()),
            named,
            f" and {len(holding) - NAMED_IN_WARNING} more" if len(holding) > 3 else "",
        )


def warn_skipped(skipped: tuple[str, ...]) -> None:
    """One warning for the files that could not be read, naming a few."""
    if skipped:
        named = ", ".join(skipped[:NAMED_IN_WARNING])
        more = f" and {len(skipped) - NAMED_IN_WARNING} more" if len(skipped) > 3 else ""
        LOG.warning("skipped %d unreadable image file(s): %s%s", len(skipped), named, more)
