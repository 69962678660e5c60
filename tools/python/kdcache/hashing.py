"""The hashes of FORMAT.md: FNV-1a-64 (§2.4), the hash split (§2.5), hashed word n-grams and their
signature (§2.4), and the dataset fingerprint (§2.6)."""
from __future__ import annotations

import hashlib
import struct
import unicodedata

import numpy as np

_MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    """FNV-1a, 64-bit (FORMAT.md §2.4): for each byte `h = ((h ^ byte) * 0x100000001b3) mod 2^64`."""
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _MASK64
    return h


def _fmix64(h: int) -> int:
    """MurmurHash3's 64-bit finalizer (FORMAT.md §2.5)."""
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return h


def hash_split(sample_id: str, test_fraction: float, valid_fraction: float, seed: int) -> str:
    """The hash split of FORMAT.md §2.5: `u = (fmix64(FNV-1a-64(seed_le8 ‖ id)) >> 11) / 2^53`;
    test if `u < test_fraction`, valid if `u < test_fraction + valid_fraction`, else train."""
    h = _fmix64(fnv1a64(sample_id.encode("utf-8"), fnv1a64(struct.pack("<Q", seed))))
    u = (h >> 11) / float(1 << 53)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def hashed_signature(bits: int, ngrams) -> str:
    """FORMAT.md §2.4's featurizer signature for these fields."""
    return f"hashed-ngrams;tokenizer=unicode-lnm-lower-v1;hash=fnv1a64;bits={bits};ngrams={','.join(map(str, ngrams))}"


class TextFeaturizer:
    """Hashed word n-grams (FORMAT.md §2.4): bucket = FNV-1a-64(n-gram) mod 2^bits, counted."""

    def __init__(self, bits: int, ngrams):
        self.bits = bits
        self.ngrams = sorted(ngrams)

    @staticmethod
    def tokens(text: str) -> list[str]:
        """Maximal runs of L/M/N code points of the lower-cased text."""
        out, current = [], []
        for ch in text.lower():
            if unicodedata.category(ch)[0] in "LMN":
                current.append(ch)
            elif current:
                out.append("".join(current))
                current = []
        if current:
            out.append("".join(current))
        return out

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ascending distinct buckets as u32, their counts as f32)."""
        toks = self.tokens(text)
        mask = (1 << self.bits) - 1
        counts: dict[int, int] = {}
        for n in self.ngrams:
            for i in range(len(toks) - n + 1):
                b = fnv1a64(" ".join(toks[i:i + n]).encode("utf-8")) & mask
                counts[b] = counts.get(b, 0) + 1
        keys = sorted(counts)
        return np.array(keys, dtype=np.uint32), np.array([counts[k] for k in keys], dtype=np.float32)


def _lp(b: bytes) -> bytes:
    """`lp(x)` of FORMAT.md §1: u32 LE byte length, then the bytes."""
    return struct.pack("<I", len(b)) + b


def dataset_fingerprint(signature: str, labels, samples) -> str:
    """FORMAT.md §2.6: `"sha256:" + hex(SHA-256(header ‖ SHA-256(content)))`, where `samples` yields
    (id, v1 record bytes, raw text or b"") in index order and content is their `lp(…)`s concatenated."""
    content = hashlib.sha256()
    for sample_id, record, text in samples:
        content.update(_lp(sample_id) + _lp(record) + _lp(text))
    header = b"kdcache-dataset-v1\n" + _lp(signature.encode()) + struct.pack("<I", len(labels))
    header += b"".join(_lp(label.encode("utf-8")) for label in labels)
    return "sha256:" + hashlib.sha256(header + content.digest()).hexdigest()
