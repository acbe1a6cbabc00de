"""Data: from files on disk to split ``uint8`` arrays (see :func:`load_dataset`)."""

from satsweep.data.dataset import Dataset, check_batch_fits, load_data, load_dataset
from satsweep.data.splits import Split

__all__ = ["Dataset", "Split", "check_batch_fits", "load_data", "load_dataset"]
