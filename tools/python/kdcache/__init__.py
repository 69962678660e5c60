"""Read and write kdcache stores from Python with py-lmdb and numpy only.

Written from FORMAT.md alone (no Swift code consulted): if this package needs something FORMAT.md
does not say, FORMAT.md is incomplete.

    import kdcache
    store = kdcache.open("data.lmdb")      # DatasetStore or SoftLabelStore
    store.manifest, len(store), store.features(0), store.text(0), store.label(0)

Modules: `format` (keys, records, CRCs), `hashing` (FNV-1a, hash split, n-grams, fingerprint),
`manifest` (manifest checks, teacher layout), `registry` (one LMDB environment per file per
process), `stores` (readers), `writer` (SoftLabelWriter, SequenceWriter), `tokens` (sequence records
and their re-tempering math), `interop` (axolotl / vLLM top-k imports), `torch` (PyTorch adapters
and KD losses, lazy).
This file only re-exports their public names.
"""
from __future__ import annotations

from .format import (LOG_PROB_TOLERANCE, FormatError, decode_sample, decode_soft_label, encode_sample, encode_soft_label,
                     manifest_checksum, record_crc)
from .hashing import TextFeaturizer, fnv1a64, hash_split, hf_tokenizer_fingerprint, tokenizer_fingerprint
from .interop import check_alignment, import_axolotl_rows, import_vllm_prompt_logprobs
from .manifest import (MAX_CLASSES, MAX_DENSE_DIMENSION, MAX_SAMPLES, MAX_TEACHER_NAME_BYTES, MAX_TEACHERS, MAX_TOP_K, MAX_VIEWS,
                       MAX_WRITE_TEMPERATURE, dataset_manifest_problems, softlabel_manifest_problems)
from .stores import DatasetStore, SoftLabelStore, open
from .tokens import SequenceRecord, decode_sequence, encode_sampled, encode_top_k
from .writer import SequenceWriter, SoftLabelWriter

__all__ = ["open", "DatasetStore", "SoftLabelStore", "SoftLabelWriter", "DistillationDataset", "SequenceWriter", "SequenceRecord",
           "TokenDistillationDataset", "decode_sequence", "encode_top_k", "encode_sampled", "tokenizer_fingerprint",
           "hf_tokenizer_fingerprint", "import_axolotl_rows", "import_vllm_prompt_logprobs", "check_alignment", "TextFeaturizer", "hash_split", "fnv1a64",
           "FormatError", "dataset_manifest_problems", "softlabel_manifest_problems", "manifest_checksum", "encode_soft_label", "encode_sample",
           "decode_soft_label", "decode_sample", "record_crc", "LOG_PROB_TOLERANCE", "MAX_CLASSES", "MAX_DENSE_DIMENSION", "MAX_SAMPLES",
           "MAX_TEACHER_NAME_BYTES", "MAX_TEACHERS", "MAX_TOP_K", "MAX_VIEWS", "MAX_WRITE_TEMPERATURE"]


def __getattr__(name):
    """`kdcache.DistillationDataset`: a `torch.utils.data.Dataset` when torch is importable, built
    on first use so that only its users import torch."""
    if name == "DistillationDataset":
        from .torch import distillation_dataset
        return distillation_dataset()
    if name == "TokenDistillationDataset":
        from .torch import TokenDistillationDataset
        return TokenDistillationDataset
    raise AttributeError(f"module 'kdcache' has no attribute {name!r}")
