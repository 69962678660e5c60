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


def _sha256_of_strings(strings) -> str:
    """`sha256:` + hex SHA-256 of `lp(s_0) ‖ lp(s_1) ‖ …` (UTF-8), as FORMAT.md §3.6 hashes vocabularies and merges."""
    h = hashlib.sha256()
    for s in strings:
        h.update(_lp(s.encode("utf-8")))
    return "sha256:" + h.hexdigest()


def tokenizer_fingerprint_of(vocab_size: int, vocab_sha256: str, merges_sha256, model_sha256) -> str:
    """FORMAT.md §3.6: `sha256:` + hex SHA-256 of `kdcache-tokenizer-1;V;vocab_sha256;merges_sha256;model_sha256`
    (null fields as empty strings)."""
    text = f"kdcache-tokenizer-1;{vocab_size};{vocab_sha256};{merges_sha256 or ''};{model_sha256 or ''}"
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokens, merges=None, model_sha256=None, name: str = "") -> dict:
    """The manifest's `tokenizer` object (FORMAT.md §3.6) for `tokens` (the vocabulary, id order),
    `merges` (`"left right"` strings or (left, right) pairs, or None) and an optional model-file hash."""
    tokens = list(tokens)
    merges_sha = None if merges is None else _sha256_of_strings(m if isinstance(m, str) else " ".join(m) for m in merges)
    vocab_sha = _sha256_of_strings(tokens)
    return {"fingerprint": tokenizer_fingerprint_of(len(tokens), vocab_sha, merges_sha, model_sha256), "vocab_size": len(tokens),
            "vocab_sha256": vocab_sha, "merges_sha256": merges_sha, "model_sha256": model_sha256, "name": name}


def hf_tokenizer_fingerprint(path, name: str | None = None) -> dict:
    """`tokenizer_fingerprint` of a Hugging Face `tokenizer.json` (parsed with json): `model.vocab`
    ordered by id with `added_tokens` at their ids, `model.merges` (strings or pairs) in order. A gap
    in the ids is refused (the vocabulary would not be the tokenizer's)."""
    import json
    import os
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    by_id = {int(i): tok for tok, i in spec["model"]["vocab"].items()}
    by_id.update({int(t["id"]): t["content"] for t in spec.get("added_tokens", [])})
    size = max(by_id) + 1 if by_id else 0
    missing = next((i for i in range(size) if i not in by_id), None)
    if missing is not None:
        raise ValueError(f"{path}: no token has id {missing} (ids 0…{size - 1} must all be named)")
    merges = spec["model"].get("merges")
    return tokenizer_fingerprint([by_id[i] for i in range(size)], merges, None, name if name is not None else os.path.basename(os.path.dirname(os.path.abspath(path))))
