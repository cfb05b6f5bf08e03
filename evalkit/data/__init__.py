"""Dataset adapters: hub datasets, local files and original annotation formats -> Samples."""

from evalkit.data import captions, hub, mme, refcoco, seed_bench, tsv, vqa_files  # noqa: F401  (importing registers their adapters)
from evalkit.data.loader import DatasetError, load_samples, register_adapter

__all__ = ["DatasetError", "load_samples", "register_adapter"]
