"""Streaming ``gencraft data prepare``: corpora larger than memory, in worker processes.

It writes the dataset the in-memory path (:mod:`gencraft.data.prepare`) writes for the same
inputs — the same documents, tokenizer and manifest digest; its token shards concatenated are that
path's ``train.bin``/``val.bin`` byte for byte — with memory bounded whatever the corpus size:

1. **read and clean** (workers): files in batches, and files larger than ``stream_bytes`` as
   streams (:func:`~gencraft.data.readers.stream_documents`, read here and handed out in chunks of
   ``chunk_chars``); each chunk's cleaned texts go to a scratch file on disk, its digests, MinHash
   band keys, lengths and split keys come back.
2. **decide** (this process, in document order): exact and near duplicates with a
   :class:`~gencraft.data.dedupe.Deduper` in ``dedupe_memory`` bytes (what it costs in recall:
   see that module), the length filter, the split.
3. **tokenizer**: ``char`` takes the characters of the kept documents (workers); ``bpe`` trains on
   the kept documents, the first ``bpe_sample_chars`` of them.
4. **encode** (workers): each chunk's kept documents become one train and one validation shard
   (``shards/train-NNNNNN.bin``...) and a ``documents-NNNNNN.jsonl``.

Peak memory: a chunk's text a few times over per worker, the Deduper's tables, one block of the
file being streamed, and the largest single document (a document is always held whole).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gencraft.data.clean import normalize_unicode, normalize_whitespace, remove_control
from gencraft.data.dedupe import Deduper, band_keys, exact_key, lsh_params, signatures
from gencraft.data.readers import STREAMABLE, StreamedFile, read_file, stream_documents
from gencraft.errors import DataError
from gencraft.tokenize import tokenizer_from_str, train_tokenizer

if TYPE_CHECKING:  # workers import the tokenizer library only when they encode
    from gencraft.tokenize import Tokenizer

CHUNK_CHARS = 1 << 22  # text per work item (4 Mi characters)
STREAM_BYTES = 1 << 24  # larger files are streamed in chunks; smaller ones are read whole by a worker
DEDUPE_MEMORY = 256 << 20  # bytes of duplicate-finding tables (~1 million documents held)
BPE_SAMPLE_CHARS = 1 << 28  # the BPE tokenizer trains on the first 256 Mi characters of kept text
ENCODE_CHARS = 1 << 20  # characters encoded at a time (bounds the token lists' memory)


@dataclass
class Options:
    """What the workers need to know (picklable)."""

    normalization: str
    unit: str
    field: str | None
    column: str | None
    dedupe: bool
    bands: int
    rows: int
    split: str
    seed: int
    scratch: str


# ---- workers -----------------------------------------------------------------------------------

def _clean_chunk(chunk: int, kind: str, payload: list, o: Options) -> dict[str, Any]:
    """Pass 1 on one chunk: read (``files``) or take (``docs``) raw documents, clean them, write the
    cleaned texts to the scratch folder, return their digests, band keys, lengths, split keys."""
    src: list[int] = []
    texts: list[str] = []
    metas: dict[int, tuple[str, int, str]] = {}
    if kind == "files":
        for idx, path in payload:
            sf = read_file(Path(path), field=o.field, column=o.column, unit=o.unit)
            metas[idx] = (sf.sha256, sf.size, sf.encoding)
            src += [idx] * len(sf.documents)
            texts += sf.documents
    else:
        src = [i for i, _ in payload]
        texts = [t for _, t in payload]
    chars = [sum(len(t) for t in texts)]
    for fn in (lambda t: normalize_unicode(t, o.normalization), remove_control, normalize_whitespace):
        texts = [fn(t) for t in texts]
        chars.append(sum(len(t) for t in texts))
    n = len(texts)
    nchars = np.array([len(t) for t in texts], dtype=np.int64)
    exact = np.array([exact_key(t) for t in texts], dtype=np.uint64)
    if o.dedupe and o.bands:
        live = np.flatnonzero(nchars > 0)
        bands = np.zeros((n, o.bands), dtype=np.uint64)
        if len(live):
            bands[live] = band_keys(signatures([texts[i] for i in live]), o.bands, o.rows)
    else:
        bands = np.zeros((n, 0), dtype=np.uint64)
    if o.split == "hash":
        key = np.array([int.from_bytes(hashlib.sha256(f"{o.seed}\x00{t}".encode()).digest()[:8], "big") / 2.0**64
                        for t in texts], dtype=np.float64)
    else:
        key = np.zeros(n, dtype=np.float64)
    blobs = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    base = Path(o.scratch) / f"chunk-{chunk:06d}"
    with open(f"{base}.txt", "wb") as f:
        f.write(b"".join(blobs))
    np.savez(f"{base}.npz", offsets=offsets, nchars=nchars, key=key, src=np.array(src, dtype=np.int32))
    return {"chunk": chunk, "n": n, "metas": metas, "chars": chars, "exact": exact, "bands": bands,
            "nchars": nchars, "key": key, "src": np.array(src, dtype=np.int32)}


@lru_cache(maxsize=4)
def _offsets(scratch: str, chunk: int) -> np.ndarray:
    with np.load(Path(scratch) / f"chunk-{chunk:06d}.npz") as z:
        return z["offsets"]


def _read_text(scratch: str, chunk: int, i: int) -> str:
    off = _offsets(scratch, chunk)
    with open(Path(scratch) / f"chunk-{chunk:06d}.txt", "rb") as f:
        f.seek(int(off[i]))
        return f.read(int(off[i + 1] - off[i])).decode("utf-8")


def _kept_texts(scratch: str, chunk: int, keep: np.ndarray, cut: int | None) -> list[str]:
    """The kept cleaned texts of a chunk, in order (``cut``: the corpus is one document, split in two
    at that character for a tail split)."""
    off = _offsets(scratch, chunk)
    data = (Path(scratch) / f"chunk-{chunk:06d}.txt").read_bytes()
    texts = [data[off[i]:off[i + 1]].decode("utf-8") for i in np.flatnonzero(keep).tolist()]
    if cut is not None:
        texts = [texts[0][:cut], texts[0][cut:]]
    return texts


def _chunk_chars(scratch: str, chunk: int, keep: np.ndarray, cut: int | None) -> str:
    seen: set[str] = set()
    for t in _kept_texts(scratch, chunk, keep, cut):
        seen.update(t)
    return "".join(sorted(seen))


def _encode_chunk(scratch: str, chunk: int, keep: np.ndarray, is_val: np.ndarray, cut: int | None,
                  first_id: int, tokenizer_json: str, dtype: str, out: str) -> dict[str, Any]:
    """Pass 2 on one chunk: its kept documents -> train/val shards and a documents file."""
    tok = tokenizer_from_str(tokenizer_json)
    texts = _kept_texts(scratch, chunk, keep, cut)
    srcs = np.load(Path(scratch) / f"chunk-{chunk:06d}.npz")["src"][keep]
    if cut is not None:
        srcs = np.repeat(srcs, 2)
    dt = np.dtype(dtype).newbyteorder("<")
    res: dict[str, Any] = {"chunk": chunk}
    names = {"train": f"train-{chunk:06d}.bin", "val": f"val-{chunk:06d}.bin"}
    stats = {s: {"documents": 0, "tokens": 0, "chars": 0} for s in names}
    with open(Path(out) / names["train"], "wb") as ftrain, open(Path(out) / names["val"], "wb") as fval, \
            open(Path(out) / f"documents-{chunk:06d}.jsonl", "w", encoding="utf-8") as docs:
        i = 0
        while i < len(texts):  # a slice of ENCODE_CHARS at a time
            j, size = i, 0
            while j < len(texts) and (j == i or size + len(texts[j]) <= ENCODE_CHARS):
                size += len(texts[j])
                j += 1
            for s, f in (("train", ftrain), ("val", fval)):
                pick = [k for k in range(i, j) if is_val[k] == (s == "val")]
                if pick:
                    ids = tok.encode_documents([texts[k] for k in pick])
                    ids.astype(dt).tofile(f)
                    stats[s]["documents"] += len(pick)
                    stats[s]["tokens"] += len(ids)
                    stats[s]["chars"] += sum(len(texts[k]) for k in pick)
            docs.write("".join(json.dumps({"id": first_id + k, "source": int(srcs[k]),
                                           "split": "val" if is_val[k] else "train", "text": texts[k]},
                                          ensure_ascii=False) + "\n" for k in range(i, j)))
            i = j
    for s in names:
        if not stats[s]["tokens"]:
            (Path(out) / names[s]).unlink()
    res["stats"] = stats
    res["files"] = {s: names[s] if stats[s]["tokens"] else None for s in names}
    res["documents"] = f"documents-{chunk:06d}.jsonl"
    return res


def _one_thread() -> None:
    """A worker encodes on one core: the processes are the parallelism (tokenizers' own thread pool
    in each would fight over the same cores)."""
    os.environ["RAYON_NUM_THREADS"] = "1"


# ---- running work in order, a few items in flight ---------------------------------------------

class _InProcess(Executor):
    """``workers=0``: the same work in this process, one item at a time."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001  (handed to the caller through the future)
            f.set_exception(e)
        return f


def _ordered(pool: Executor, calls: Iterator[tuple], inflight: int) -> Iterator[Any]:
    """Results of ``fn(*args)`` for each ``(fn, *args)`` of ``calls``, in order, with at most
    ``inflight`` submitted and not yet consumed (so a fast reader cannot pile chunks up in memory)."""
    pending: deque[Future] = deque()
    for call in calls:
        pending.append(pool.submit(*call))
        if len(pending) >= inflight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# ---- the pipeline ------------------------------------------------------------------------------

@dataclass
class Prepared:
    """What :func:`prepare_stream` hands back to ``prepare`` to write the manifest."""

    sources: list[StreamedFile]
    kept_per_source: list[int]
    steps: list[dict[str, Any]]
    tokenizer: Any
    dtype: str
    splits: dict[str, dict[str, int]]
    shards: dict[str, Any]


def prepare_stream(files: Sequence[Path], out_tmp: Path, *, tokenizer: str | Tokenizer, vocab_size: int | None,
                   field: str | None, column: str | None, normalization: str, dedupe: bool,
                   near_dup_threshold: float, min_chars: int, max_chars: int | None, val_fraction: float,
                   split: str, unit: str, seed: int, workers: int = 0, chunk_chars: int = CHUNK_CHARS,
                   stream_bytes: int = STREAM_BYTES, dedupe_memory: int | None = DEDUPE_MEMORY,
                   bpe_sample_chars: int = BPE_SAMPLE_CHARS, names: str = "",
                   progress: Callable[[str], None] | None = None) -> Prepared:
    """Prepare ``files`` (already collected, in order) into ``out_tmp`` (shards, tokenizer) and
    return what the manifest needs. ``workers``: processes (0 = this one). ``tokenizer``: the kind to
    learn from the kept documents, or a tokenizer to encode with as it is (``--tokenizer-from``)."""
    say = progress or (lambda _m: None)
    scratch = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out_tmp.parent))
    bands, rows = lsh_params(max(0.05, near_dup_threshold - 0.1)) if dedupe else (0, 0)
    o = Options(normalization, unit, field, column, dedupe, bands, rows, split, seed, str(scratch))
    pool: Executor = (_InProcess() if workers <= 0 else
                      ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread))
    try:
        return _run(files, out_tmp, scratch, o, pool, max(1, workers), tokenizer=tokenizer, vocab_size=vocab_size,
                    min_chars=min_chars, max_chars=max_chars, val_fraction=val_fraction,
                    threshold=near_dup_threshold, chunk_chars=chunk_chars, stream_bytes=stream_bytes,
                    dedupe_memory=dedupe_memory, bpe_sample_chars=bpe_sample_chars, names=names, say=say)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)
        _offsets.cache_clear()


def _work(files: Sequence[Path], o: Options, chunk_chars: int, stream_bytes: int,
          streamed: dict[int, StreamedFile], say: Callable[[str], None]) -> Iterator[tuple]:
    """Pass-1 calls, in document order: batches of small files, chunks of streamed ones."""
    chunk = 0
    batch: list[tuple[int, str]] = []
    size = 0
    for idx, path in enumerate(files):
        nbytes = path.stat().st_size
        if path.suffix.lower() in STREAMABLE and nbytes > stream_bytes and o.unit != "file":
            if batch:
                yield (_clean_chunk, chunk, "files", batch, o)
                chunk, batch, size = chunk + 1, [], 0
            info = streamed[idx] = StreamedFile(path)
            say(f"streaming {path} ({nbytes / 1e6:,.0f} MB)")
            docs: list[tuple[int, str]] = []
            n = 0
            for d in stream_documents(path, info, field=o.field, unit=o.unit):
                docs.append((idx, d))
                n += len(d)
                if n >= chunk_chars:
                    yield (_clean_chunk, chunk, "docs", docs, o)
                    chunk, docs, n = chunk + 1, [], 0
            if docs:
                yield (_clean_chunk, chunk, "docs", docs, o)
                chunk += 1
            continue
        batch.append((idx, str(path)))
        size += nbytes
        if size >= chunk_chars:
            yield (_clean_chunk, chunk, "files", batch, o)
            chunk, batch, size = chunk + 1, [], 0
    if batch:
        yield (_clean_chunk, chunk, "files", batch, o)


def _run(files: Sequence[Path], out_tmp: Path, scratch: Path, o: Options, pool: Executor, inflight: int, *,
         tokenizer: str | Tokenizer, vocab_size: int | None, min_chars: int, max_chars: int | None, val_fraction: float,
         threshold: float, chunk_chars: int, stream_bytes: int, dedupe_memory: int | None, bpe_sample_chars: int,
         names: str, say: Callable[[str], None]) -> Prepared:
    sc = str(scratch)
    dd = Deduper(threshold if o.dedupe else None, lambda ref: _read_text(sc, ref >> 32, ref & 0xFFFFFFFF),
                 memory=dedupe_memory)
    streamed: dict[int, StreamedFile] = {}
    metas: dict[int, tuple[str, int, str]] = {}
    kept_per_source = [0] * len(files)
    chars = [0, 0, 0, 0]  # read, normalize, control_chars, whitespace
    n_read = 0
    after = {"exact_dedupe": [0, 0], "near_dedupe": [0, 0], "length_filter": [0, 0]}  # documents, chars
    chunks: list[dict[str, Any]] = []  # per chunk: kept count, kept mask path
    lo = max(min_chars, 1)
    best_min = best_max = None  # (key, global kept index) of the hash split's fix-ups
    n_kept = 0
    n_val = 0
    for r in _ordered(pool, _work(files, o, chunk_chars, stream_bytes, streamed, say), 2 * inflight):
        c, n = r["chunk"], r["n"]
        metas.update(r["metas"])
        n_read += n
        chars = [a + b for a, b in zip(chars, r["chars"], strict=True)]
        nchars = r["nchars"]
        if o.dedupe:
            refs = (np.int64(c) << np.int64(32)) + np.arange(n, dtype=np.int64)
            keep = dd.decide(refs, r["exact"], r["bands"], nchars == 0)
            surv = dd.survivors
        else:
            keep = surv = np.ones(n, dtype=bool)
        for name, mask in (("exact_dedupe", surv), ("near_dedupe", keep)):
            after[name][0] += int(mask.sum())
            after[name][1] += int(nchars[mask].sum())
        keep = keep & (nchars >= lo) & ((nchars <= max_chars) if max_chars is not None else True)
        after["length_filter"][0] += int(keep.sum())
        after["length_filter"][1] += int(nchars[keep].sum())
        np.save(scratch / f"keep-{c:06d}.npy", keep)
        kept_idx = np.flatnonzero(keep)
        for s in r["src"][keep].tolist():
            kept_per_source[s] += 1
        if o.split == "hash" and len(kept_idx):
            keys = r["key"][kept_idx]
            n_val += int((keys < val_fraction).sum())
            i_min, i_max = int(np.argmin(keys)), int(np.argmax(keys))
            if best_min is None or keys[i_min] < best_min[0]:
                best_min = (float(keys[i_min]), n_kept + i_min)
            if best_max is None or keys[i_max] > best_max[0]:
                best_max = (float(keys[i_max]), n_kept + i_max)
        chunks.append({"chunk": c, "kept": len(kept_idx), "first": n_kept})
        n_kept += len(kept_idx)
        say(f"chunk {c}: {n} documents read, {len(kept_idx)} kept ({n_kept:,} so far)")
    for idx, info in streamed.items():
        metas[idx] = (info.sha256, info.size, info.encoding)

    steps = [{"step": "read", "documents": n_read, "chars": chars[0]}]
    for name, ch in zip(("normalize", "control_chars", "whitespace"), chars[1:], strict=True):
        steps.append({"step": name, "documents": n_read, "chars": ch})
    before = n_read
    for name in (("exact_dedupe", "near_dedupe") if o.dedupe else ()) + ("length_filter",):
        steps.append({"step": name, "documents": after[name][0], "chars": after[name][1],
                      "removed": before - after[name][0]})
        before = after[name][0]
    if o.dedupe:
        say(f"deduplicated: {steps[3]['documents']} -> {steps[5]['documents']} documents"
            + (f" ({dd.forgotten:,} documents fell out of the duplicate tables)" if dd.forgotten else ""))

    if not n_kept:
        raise DataError(f"{names}: empty corpus: no documents left after cleaning (read {n_read}); "
                        "check the files, --field/--column, --min-chars/--max-chars")
    cut = None
    if n_kept == 1 and val_fraction > 0:
        (only,) = [c for c in chunks if c["kept"]]
        length = after["length_filter"][1]
        if o.split != "tail" or length < 2:
            raise DataError(f"{names}: only one document after cleaning, none left for validation; "
                            "use --split tail, --unit paragraph or --unit line, add files, or --val-fraction 0")
        cut = (only["chunk"], min(max(1, round(length * (1 - val_fraction))), length - 1))
        n_kept = 2
        kept_per_source[kept_per_source.index(1)] = 2  # its source now gives two documents
    # which kept documents are validation: global kept index -> bool, decided per chunk below
    val_from = None  # tail: the first validation document
    fix_val = fix_train = None  # hash: documents moved so that both splits have one
    if o.split == "tail" and val_fraction > 0 and n_kept >= 2:
        val_from = _tail_start(scratch, chunks, cut, val_fraction)
    if o.split == "hash" and val_fraction > 0 and n_kept >= 2 and cut is None:
        if n_val == 0:
            fix_val = best_min[1]
        if n_val == n_kept:
            fix_train = best_max[1]

    # the tokenizer, from the kept documents (unless one is given)
    if not isinstance(tokenizer, str):
        tok = tokenizer
    elif tokenizer == "char":
        got = _ordered(pool, ((_chunk_chars, sc, c["chunk"], np.load(scratch / f"keep-{c['chunk']:06d}.npy"),
                               cut[1] if cut and cut[0] == c["chunk"] else None) for c in chunks if c["kept"]),
                       2 * inflight)
        alphabet: set[str] = set()
        for s in got:
            alphabet.update(s)

        tok = train_tokenizer("char", ["".join(sorted(alphabet))])
    else:
        say(f"training the bpe tokenizer on the kept documents (up to {bpe_sample_chars:,} characters)")
        tok = train_tokenizer("bpe", _sample(scratch, chunks, cut, bpe_sample_chars), vocab_size)
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
    tok_json = tok.to_str()

    shard_dir = out_tmp / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards: dict[str, list] = {"train": [], "val": [], "documents": []}
    splits = {s: {"documents": 0, "tokens": 0, "chars": 0} for s in ("train", "val")}

    def calls() -> Iterator[tuple]:
        for c in chunks:
            if not c["kept"]:
                continue
            keep = np.load(scratch / f"keep-{c['chunk']:06d}.npy")
            chunk_cut = cut[1] if cut and cut[0] == c["chunk"] else None
            k = c["kept"] + (1 if chunk_cut is not None else 0)
            ids = np.arange(c["first"], c["first"] + k)
            is_val = np.zeros(k, dtype=bool)
            if o.split == "hash" and chunk_cut is None:
                key = np.load(scratch / f"chunk-{c['chunk']:06d}.npz")["key"][keep]
                is_val = key < val_fraction
                is_val[ids == fix_val] = True
                is_val[ids == fix_train] = False
            elif val_from is not None:
                is_val = ids >= val_from
            yield (_encode_chunk, sc, c["chunk"], keep, is_val, chunk_cut, c["first"], tok_json, dtype, str(shard_dir))

    for r in _ordered(pool, calls(), 2 * inflight):
        for s in ("train", "val"):
            for f in ("documents", "tokens", "chars"):
                splits[s][f] += r["stats"][s][f]
            if r["files"][s]:
                shards[s].append([f"shards/{r['files'][s]}", r["stats"][s]["tokens"]])
        shards["documents"].append(f"shards/{r['documents']}")
    tok.save(out_tmp / "tokenizer.json")
    sources = []
    for idx, path in enumerate(files):
        sha, size, enc = metas[idx]
        sources.append(StreamedFile(path, sha, size, enc))
    return Prepared(sources, kept_per_source, steps, tok, dtype, splits, shards)


def _tail_start(scratch: Path, chunks: list[dict[str, Any]], cut: tuple[int, int] | None, f: float) -> int:
    """The first validation document of a tail split (what ``prepare._split_tail`` decides), walking
    the kept documents' lengths backwards chunk by chunk."""
    lengths = []
    for c in chunks:
        if c["kept"]:
            keep = np.load(scratch / f"keep-{c['chunk']:06d}.npy")
            nch = np.load(scratch / f"chunk-{c['chunk']:06d}.npz")["nchars"][keep]
            if cut is not None:
                nch = np.array([cut[1], int(nch[0]) - cut[1]])
            lengths.append(nch)
    n = sum(len(x) for x in lengths)
    target = f * float(sum(int(x.sum()) for x in lengths))
    acc, i = 0, n
    for arr in reversed(lengths):
        for v in arr[::-1].tolist():
            if not (i > 1 and (acc < target or i == n)):
                return i
            i -= 1
            acc += v
    return i


def _sample(scratch: Path, chunks: list[dict[str, Any]], cut: tuple[int, int] | None, limit: int) -> Iterator[str]:
    """The kept documents in order, until ``limit`` characters (the BPE tokenizer's training text)."""
    total = 0
    for c in chunks:
        if not c["kept"]:
            continue
        keep = np.load(scratch / f"keep-{c['chunk']:06d}.npy")
        for t in _kept_texts(str(scratch), c["chunk"], keep, cut[1] if cut and cut[0] == c["chunk"] else None):
            if total >= limit:
                return
            total += len(t)
            yield t
