"""Data: from files on disk to split ``uint8`` arrays (see :func:`load_dataset`)."""

from satsweep.data.dataset import Dataset, load_data, load_dataset
from satsweep.data.splits import Split

__all__ = ["Dataset", "Split", "load_data", "load_dataset"]
