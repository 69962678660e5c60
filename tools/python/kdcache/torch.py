"""PyTorch adapters, built lazily: importing torch costs a second, so only their users pay it, and
numpy-only users never import torch (`kdcache.DistillationDataset` calls `distillation_dataset()`)."""
from __future__ import annotations

import numpy as np

from .format import FormatError


class _DistillationDataset:
    """A map-style dataset for PyTorch: item i is (features, label, teacher probabilities at T)
    of the i-th sample of `split`. A `torch.utils.data.Dataset` when torch is importable (it only
    needs __len__ and __getitem__); safe in forked DataLoader workers (read-only environments
    without a lock file stay usable after fork)."""

    def __init__(self, data, cache, split: str = "train", temperature: float = 1.0,
                 teacher: str | None = None, dense: bool = True):
        if cache.manifest["dataset_fingerprint"] != data.manifest["fingerprint"]:
            raise FormatError(f"{cache.path}: written for dataset {cache.manifest['dataset_fingerprint']}, not {data.manifest['fingerprint']}")
        self.data, self.cache, self.temperature, self.teacher, self.dense = data, cache, temperature, teacher, dense
        self.indices = [i for i, r in data if r["split"] == split]
        self.dimension = data.manifest["featurizer"]["dimension"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        r = self.data.record(i)
        if r["kind"] == "sparse" and self.dense:
            x = np.zeros(self.dimension, dtype=np.float32)
            x[r["indices"]] = r["values"]
        else:
            x = r["values"] if r["kind"] == "dense" else (r["indices"], r["values"])
        p = self.cache.probs(i, temperature=self.temperature, teacher=self.teacher).astype(np.float32)
        return x, r["label"], p


_ADAPTER = None
_PICKLED_AS = {"__module__": "kdcache"}  # pickle finds the class as kdcache.DistillationDataset (spawned workers)


def distillation_dataset() -> type:
    """The `DistillationDataset` class, built on first use: `_DistillationDataset` plus
    `torch.utils.data.Dataset` as a base when torch is importable, alone otherwise."""
    global _ADAPTER
    if _ADAPTER is None:
        try:
            import torch.utils.data as torch_data
            _ADAPTER = type("DistillationDataset", (_DistillationDataset, torch_data.Dataset), _PICKLED_AS)
        except ImportError:
            _ADAPTER = type("DistillationDataset", (_DistillationDataset,), _PICKLED_AS)
    return _ADAPTER
