"""Deduplication: exact (hash of the cleaned text) and near-duplicate (MinHash + LSH).

Near duplicates are found on *character* shingles (hashed with numpy, :func:`shingle_hashes`), so Chinese needs no word segmentation:
5-character shingles for most text, 3-character shingles for documents that are mostly CJK
(a Chinese character carries about as much as a short English word). We use ``datasketch``
(MinHash with 128 permutations and its banded LSH index) rather than our own: it is small,
well kept and tested; our part is only the shingling and the keep-the-first policy.
The LSH index is built for a threshold a little below the requested one (fewer missed
pairs), and every candidate it returns is confirmed with the *exact* Jaccard similarity of the
two shingle sets before a document is dropped, so LSH false positives never remove text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from gencraft.errors import UsageError

NUM_PERM = 128
MINHASH_SEED = 1  # fixed: the same corpus is always deduplicated the same way


def exact_dedupe(texts: Sequence[str]) -> list[int]:
    """Indices of the documents to keep: the first of each group of identical texts."""
    seen: set[bytes] = set()
    keep = []
    for i, t in enumerate(texts):
        h = hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest()
        if h not in seen:
            seen.add(h)
            keep.append(i)
    return keep


_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the polynomial base of the rolling hash


def shingle_size(text: str) -> int:
    """3 for mostly-CJK text, 5 otherwise."""
    letters = len("".join(text.split()))
    if not letters:
        return 5
    return 3 if len(_CJK.findall(text)) / letters > 0.5 else 5


def shingle_hashes(text: str, k: int | None = None) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character k-grams of ``text`` (whitespace runs collapsed).

    A polynomial hash of the k code points, finished with a 64-bit mixer (splitmix64), computed
    for all positions at once with numpy; MinHash then permutes these values.
    """
    k = k or shingle_size(text)
    t = " ".join(text.split())
    cp = np.frombuffer(t.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    n = max(1, len(cp) - k + 1)
    k = min(k, len(cp))
    h = np.full(n, np.uint64(k))
    for j in range(k):
        h = h * _PRIME + cp[j:j + n]  # uint64 arithmetic wraps, as a hash should
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return np.unique((h >> np.uint64(32)).astype(np.uint32))


def _identity(x: int) -> int:
    return x


def near_dedupe(texts: Sequence[str], threshold: float = 0.8) -> list[int]:
    """Indices of documents to keep: a document whose estimated Jaccard similarity (character
    shingles) with an earlier kept one is ``>= threshold`` is dropped."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        raise UsageError("near-duplicate removal needs the datasketch package (pip install datasketch); "
                         "or pass --no-dedupe", param="dedupe") from None

    if len(texts) < 2:
        return list(range(len(texts)))
    sets = [shingle_hashes(t) for t in texts]
    hashes = MinHash.bulk((h.tolist() for h in sets), num_perm=NUM_PERM, seed=MINHASH_SEED, hashfunc=_identity)
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=NUM_PERM)
    keep = []
    for i, m in enumerate(hashes):
        if not texts[i]:
            keep.append(i)  # empty documents are the length filter's business
            continue
        if any(_jaccard(sets[i], sets[j]) >= threshold for j in lsh.query(m)):
            continue
        lsh.insert(i, m, check_duplication=False)
        keep.append(i)
    return keep


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / max(1, len(a) + len(b) - inter)


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of two texts' shingle sets (the measure near-duplicate removal uses)."""
    k = shingle_size(a + b)
    return _jaccard(shingle_hashes(a, k), shingle_hashes(b, k))
