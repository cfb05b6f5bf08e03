"""Dataset adapters: hub datasets, local files and original annotation formats -> Samples."""

from evalkit.data.loader import DatasetError, load_samples, register_adapter

__all__ = ["DatasetError", "load_samples", "register_adapter"]
