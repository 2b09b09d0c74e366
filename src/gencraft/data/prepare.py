"""``prepare``: sources -> a dataset directory (the contract in docs/architecture.md).

read -> normalize -> control characters -> whitespace -> exact dedupe -> near dedupe ->
length filter -> split by document -> train the tokenizer -> encode -> write, all at once
with :func:`gencraft.io.atomic_dir`, so an error at any step leaves no dataset behind.

Two paths, one result: in memory (below; small corpora) or streaming in worker processes
(:mod:`gencraft.data.stream`; corpora larger than memory, ``workers`` or ``stream=True``), which
writes token shards instead of one ``train.bin``/``val.bin`` — byte for byte the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gencraft import __version__
from gencraft.data.clean import check_normalization, normalize_unicode, normalize_whitespace, remove_control
from gencraft.data.dataset import load_dataset, tokenizer_digest
from gencraft.data.dedupe import Deduper
from gencraft.data.readers import UNITS, iter_source_files, read_file
from gencraft.data.stream import DEDUPE_MEMORY, prepare_stream
from gencraft.errors import DataError, UsageError
from gencraft.io import atomic_dir, write_json
from gencraft.paths import dataset_path
from gencraft.paths import resolved as resolved_path
from gencraft.tokenize import Tokenizer, TokenizerLike, load_tokenizer, train_tokenizer

SPLITS = ("hash", "tail")
TOKENIZERS = ("char", "bpe")
FORMAT = 1


@dataclass
class _Doc:
    source: int  # index into the manifest's sources
    text: str


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _check_options(tokenizer: str, vocab_size: int | None, normalization: str, near_dup_threshold: float,
                   min_chars: int, max_chars: int | None, val_fraction: float, split: str, unit: str) -> str:
    if tokenizer not in TOKENIZERS:
        raise UsageError(f"--tokenizer {tokenizer!r} must be one of {', '.join(TOKENIZERS)}", param="tokenizer")
    if vocab_size is not None and tokenizer != "bpe":
        raise UsageError("--vocab-size only applies to --tokenizer bpe", param="vocab_size")
    if vocab_size is not None and not 257 <= vocab_size <= 1 << 20:
        raise UsageError(f"--vocab-size {vocab_size} must be between 257 and {1 << 20}", param="vocab_size")
    norm = check_normalization(normalization)
    if not 0.0 < near_dup_threshold <= 1.0:
        raise UsageError(f"--near-dup-threshold {near_dup_threshold} must be in (0, 1]", param="near_dup_threshold")
    if min_chars < 0:
        raise UsageError(f"--min-chars {min_chars} must be >= 0", param="min_chars")
    if max_chars is not None and max_chars < max(min_chars, 1):
        raise UsageError(f"--max-chars {max_chars} must be >= --min-chars ({min_chars}) and >= 1", param="max_chars")
    if not 0.0 <= val_fraction < 1.0 or math.isnan(val_fraction):
        raise UsageError(f"--val-fraction {val_fraction} must be in [0, 1)", param="val_fraction")
    if split not in SPLITS:
        raise UsageError(f"--split {split!r} must be one of {', '.join(SPLITS)}", param="split")
    if unit not in UNITS:
        raise UsageError(f"--unit {unit!r} must be one of {', '.join(UNITS)}", param="unit")
    return norm


def _license_for(path: Path, license: str | Mapping[str, str] | None) -> str:
    """The license of one file: one string for all, or from a mapping ``path -> license`` where the
    entry of the file or of the nearest folder above it wins and ``"*"`` is the default."""
    if license is None:
        return "unknown"
    if isinstance(license, str):
        return license or "unknown"
    resolved = path.resolve()
    best, best_len = license.get("*", "unknown"), -1
    for key, value in license.items():
        if key == "*":
            continue
        k = resolved_path(key, "--license")
        if (resolved == k or k in resolved.parents) and len(k.parts) > best_len:
            best, best_len = value, len(k.parts)
    return best or "unknown"


def check_license_paths(license: str | Mapping[str, str] | None, files: Sequence[Any]) -> None:
    """Every ``PATH=LICENSE`` must name a source file or a folder holding one: a path that matches
    nothing is a typo that would otherwise leave those files' license silently unknown."""
    if not isinstance(license, Mapping):
        return
    paths = [Path(getattr(f, "path", f)).resolve() for f in files]
    for key in license:
        if key == "*":
            continue
        k = resolved_path(key, "--license")
        if not any(p == k or k in p.parents for p in paths):
            raise UsageError(f"--license {key}={license[key]}: {key} is not one of the sources or a folder "
                             "holding one; check the path", param="license")


def parse_licenses(values: Sequence[str] | None) -> str | dict[str, str] | None:
    """``--license`` values -> ``prepare``'s ``license``: ``["MIT"]`` -> ``"MIT"``;
    ``["stories/=CC-BY-4.0", "MIT"]`` -> ``{"stories/": "CC-BY-4.0", "*": "MIT"}``."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out: dict[str, str] = {}
    for v in values:
        key, sep, lic = v.rpartition("=")
        if not sep:
            key, lic = "*", v
        if not key or not lic or key in out:
            raise UsageError(f"--license {v!r}: give one LICENSE, or PATH=LICENSE once per path", param="license")
        out[key] = lic
    return out


def _split_hash(texts: Sequence[str], val_fraction: float, seed: int) -> list[bool]:
    """``True`` = validation. A stable hash of (seed, text) decides, independent of order."""
    keys = [int.from_bytes(hashlib.sha256(f"{seed}\x00{t}".encode()).digest()[:8], "big") / 2.0**64 for t in texts]
    is_val = [k < val_fraction for k in keys]
    if val_fraction > 0 and len(texts) >= 2:
        if not any(is_val):
            is_val[min(range(len(keys)), key=keys.__getitem__)] = True
        if all(is_val):
            is_val[max(range(len(keys)), key=keys.__getitem__)] = False
    return is_val


def _split_tail(texts: Sequence[str], val_fraction: float) -> list[bool]:
    """The last documents holding ``val_fraction`` of the characters are validation (like nanoGPT)."""
    n = len(texts)
    is_val = [False] * n
    if val_fraction <= 0 or n < 2:
        return is_val
    target = val_fraction * sum(len(t) for t in texts)
    acc, i = 0, n
    while i > 1 and (acc < target or i == n):
        i -= 1
        acc += len(texts[i])
        is_val[i] = True
    return is_val


def _step(steps: list[dict[str, Any]], name: str, docs: list[_Doc], before: int | None = None) -> None:
    entry: dict[str, Any] = {"step": name, "documents": len(docs), "chars": sum(len(d.text) for d in docs)}
    if before is not None:
        entry["removed"] = before - len(docs)
    steps.append(entry)


def _list_files(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[dict[str, str]]]:
    """The files to read, in order (each once), and the ones skipped with the reason."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    seen: set[Path] = set()
    for src in sources:
        root = Path(os.path.expanduser(os.fspath(src)))
        readable = 0
        for path, reason in iter_source_files(root):
            if reason is not None:
                skipped.append({"path": str(path), "reason": reason})
                continue
            readable += 1
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            files.append(path)
        if root.is_dir() and readable == 0:
            raise DataError(f"{root}: folder has no readable files (supported: .txt .md .html .json .jsonl .csv)")
    return files, skipped


def _check_out(out_path: Path, sources: Sequence[str | os.PathLike[str]]) -> Path:
    """Refuse an ``--out`` that would replace something that is not a dataset, or a source."""
    if out_path.exists() and not (out_path / "manifest.json").is_file():
        raise UsageError(f"--out {out_path} exists and is not a gencraft dataset; choose another name", param="out")
    o = resolved_path(out_path, "--out")
    for src in sources:
        s = resolved_path(src, "source", "sources")
        if s == o or o in s.parents:
            raise UsageError(f"--out {out_path} is inside source {src}; choose another name", param="out")
    return out_path


def clean_documents(docs: list[_Doc], normalization: str = "NFC", *, dedupe: bool = True,
                    near_dup_threshold: float = 0.8, min_chars: int = 1,
                    max_chars: int | None = None) -> tuple[list[_Doc], list[dict[str, Any]]]:
    """Apply the cleaning steps in order; returns the kept documents and the count after each step."""
    steps: list[dict[str, Any]] = []
    _step(steps, "read", docs)
    for name, fn in (("normalize", lambda t: normalize_unicode(t, normalization)),
                     ("control_chars", remove_control), ("whitespace", normalize_whitespace)):
        for d in docs:
            d.text = fn(d.text)
        _step(steps, name, docs)
    if dedupe:
        texts = [d.text for d in docs]
        dd = Deduper(near_dup_threshold, texts.__getitem__)
        keep = dd.keep(texts, np.arange(len(texts)))
        before = len(docs)
        exact = [d for d, k in zip(docs, dd.survivors.tolist(), strict=True) if k]
        _step(steps, "exact_dedupe", exact, before)
        docs = [d for d, k in zip(docs, keep.tolist(), strict=True) if k]
        _step(steps, "near_dedupe", docs, len(exact))
    before = len(docs)
    lo = max(min_chars, 1)
    docs = [d for d in docs if len(d.text) >= lo and (max_chars is None or len(d.text) <= max_chars)]
    _step(steps, "length_filter", docs, before)
    return docs, steps


def _write_dataset(out_path: Path, manifest: dict[str, Any], docs: list[_Doc], is_val: list[bool],
                   ids: list[list[int]], tok: Tokenizer) -> None:
    """Write the dataset directory in one go (``atomic_dir``); fills ``manifest["splits"]``."""
    with atomic_dir(out_path) as tmp:
        for name, want in (("train", False), ("val", True)):
            chosen = [i for i in range(len(docs)) if is_val[i] == want]
            arr = _join_with_eos([ids[i] for i in chosen], tok.eos_id, manifest["dtype"])
            arr.tofile(tmp / f"{name}.bin")
            manifest["splits"][name] = {"documents": len(chosen), "tokens": int(arr.size),
                                        "chars": sum(len(docs[i].text) for i in chosen)}
        with open(tmp / "documents.jsonl", "w", encoding="utf-8") as fh:
            for i, d in enumerate(docs):
                fh.write(json.dumps({"id": i, "source": d.source, "split": "val" if is_val[i] else "train",
                                     "text": d.text}, ensure_ascii=False) + "\n")
        tok.save(tmp / "tokenizer.json")
        write_json(tmp / "manifest.json", manifest)


def prepare(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    field: str | None = None,
    column: str | None = None,
    license: str | Mapping[str, str] | None = None,
    normalization: str = "NFC",
    dedupe: bool = True,
    near_dup_threshold: float = 0.8,
    min_chars: int = 1,
    max_chars: int | None = None,
    val_fraction: float = 0.1,
    split: str = "hash",
    unit: str = "auto",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    tokenizer_from: str | os.PathLike[str] | None = None,
    base_tokenizer: TokenizerLike | None = None,
    workers: int | None = None,
    stream: bool | None = None,
    dedupe_memory: int | None = None,
    **stream_options: Any,
) -> Path:
    """Read, clean, deduplicate and split ``sources``, train a tokenizer, write a dataset directory.

    ``sources`` are files or folders (walked recursively in sorted order). ``out`` is a dataset
    name (under ``GENCRAFT_HOME/datasets``) or a path. ``license`` is one license for every source
    or a mapping ``path -> license`` (a folder's entry covers its files); an unknown license
    warns once. ``tokenizer_from`` (a run, or ``hf:PATH``, recorded in the manifest) with
    ``base_tokenizer`` (its tokenizer: ``gencraft.train.finetune.base_tokenizer(spec)``) takes that
    model's tokenizer instead of training one, so the dataset can fine-tune it (``train --from``);
    ``tokenizer_from`` a dataset (name or path; ``base_tokenizer`` None) takes that dataset's, so the
    two can be read as one (:func:`combine`: more data without preparing the old again). Returns the
    dataset directory. Bad input raises a ``GencraftError`` subclass and leaves no directory behind.

    ``stream``: the streaming path (:mod:`gencraft.data.stream`) in ``workers`` processes (0 = this
    one), its duplicate tables in ``dedupe_memory`` bytes; ``None`` = streaming when ``workers`` is
    given or the sources hold more than ``STREAM_AUTO_BYTES``. ``stream_options`` reach
    :func:`~gencraft.data.stream.prepare_stream` (``chunk_chars``, ``stream_bytes``...).
    """
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if not sources:
        raise UsageError("no sources given; pass files or folders to read", param="sources")
    norm = _check_options(tokenizer, vocab_size, normalization, near_dup_threshold, min_chars, max_chars,
                          val_fraction, split, unit)
    if workers is not None and workers < 0:
        raise UsageError(f"--workers {workers} must be >= 0", param="workers")
    if dedupe_memory is not None and dedupe_memory < 1 << 20:
        raise UsageError(f"dedupe_memory={dedupe_memory} bytes is under 1 MiB; pass --dedupe-memory 1 (MiB) or more",
                         param="dedupe_memory")
    out_path = _check_out(dataset_path(out), sources)
    base_tok = None
    if tokenizer_from is not None:
        if tokenizer != "char" or vocab_size is not None:
            raise UsageError("--tokenizer-from takes the base model's tokenizer: drop --tokenizer/--vocab-size",
                             param="tokenizer_from")
        if base_tokenizer is None:  # a dataset's
            ds = dataset_path(tokenizer_from)
            if not (ds / "tokenizer.json").is_file():
                raise UsageError(f"--tokenizer-from {os.fspath(tokenizer_from)}: no dataset there ({ds}); a run "
                                 "or hf:PATH needs base_tokenizer (gencraft.train.finetune.base_tokenizer(spec)), "
                                 "the CLI passes it", param="tokenizer_from")
            base_tokenizer = load_tokenizer(ds / "tokenizer.json")
        base_tok = base_tokenizer

    paths, skipped = _list_files(sources)
    check_license_paths(license, paths)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) of unsupported type, e.g. {skipped[0]['path']}", stacklevel=2)
    if stream is None:
        stream = workers is not None or sum(p.stat().st_size for p in paths) > STREAM_AUTO_BYTES
    names = ", ".join(str(s) for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
    options = {"normalization": norm, "min_chars": min_chars, "max_chars": max_chars, "dedupe": dedupe,
               "near_dup_threshold": near_dup_threshold, "val_fraction": val_fraction, "split": split,
               "unit": unit, "seed": seed, "field": field, "column": column}
    licenses = [_license_for(p, license) for p in paths]
    if stream:
        with atomic_dir(out_path) as tmp:
            got = prepare_stream(paths, tmp, tokenizer=base_tok or tokenizer, vocab_size=vocab_size, field=field,
                                 column=column, normalization=norm, dedupe=dedupe, near_dup_threshold=near_dup_threshold,
                                 min_chars=min_chars, max_chars=max_chars, val_fraction=val_fraction, split=split,
                                 unit=unit, seed=seed, workers=workers or 0, names=names,
                                 dedupe_memory=DEDUPE_MEMORY if dedupe_memory is None else dedupe_memory,
                                 progress=progress, **stream_options)
            manifest = _manifest(out_path, [(f.path, f.sha256, f.size, f.encoding) for f in got.sources], licenses,
                                 got.kept_per_source, options, got.steps, got.tokenizer, got.dtype, skipped)
            manifest["splits"] = got.splits
            manifest["shards"] = got.shards
            if tokenizer_from is not None:
                manifest["tokenizer"]["from"] = os.fspath(tokenizer_from)
            write_json(tmp / "manifest.json", manifest)
        _say(progress, f"wrote {out_path}")
        return out_path

    files = []
    for path in paths:
        files.append(read_file(path, field=field, column=column, unit=unit))
        _say(progress, f"read {path} ({files[-1].encoding}, {len(files[-1].documents)} documents)")

    docs, steps = clean_documents([_Doc(i, t) for i, f in enumerate(files) for t in f.documents], norm,
                                  dedupe=dedupe, near_dup_threshold=near_dup_threshold, min_chars=min_chars,
                                  max_chars=max_chars)
    if dedupe:
        _say(progress, f"deduplicated: {steps[3]['documents']} -> {steps[5]['documents']} documents")

    if not docs:
        raise DataError(f"{names}: empty corpus: no documents left after cleaning (read {steps[0]['documents']}); "
                        "check the files, --field/--column, --min-chars/--max-chars")
    if len(docs) == 1 and val_fraction > 0:
        if split != "tail" or len(docs[0].text) < 2:
            raise DataError(f"{names}: only one document after cleaning, none left for validation; "
                            "use --split tail, --unit paragraph or --unit line, add files, or --val-fraction 0")
        # One long text with --split tail: cut it like nanoGPT does (first 1-f of the characters
        # train, the rest validation), so figures compare with nanoGPT's tinyshakespeare.
        d = docs[0]
        cut = min(max(1, round(len(d.text) * (1 - val_fraction))), len(d.text) - 1)
        docs = [_Doc(d.source, d.text[:cut]), _Doc(d.source, d.text[cut:])]

    texts = [d.text for d in docs]
    is_val = _split_hash(texts, val_fraction, seed) if split == "hash" else _split_tail(texts, val_fraction)

    if base_tok is not None:
        _say(progress, f"tokenizing with the tokenizer of {os.fspath(tokenizer_from)}")
        tok = base_tok
    else:
        _say(progress, f"training the {tokenizer} tokenizer on {len(texts)} documents")
        tok = train_tokenizer(tokenizer, texts, vocab_size)
    ids = tok.encode_batch(texts)
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"

    kept_per_source = [0] * len(files)
    for d in docs:
        kept_per_source[d.source] += 1
    manifest = _manifest(out_path, [(f.path, f.sha256, f.size, f.encoding) for f in files], licenses,
                         kept_per_source, options, steps, tok, dtype, skipped)
    if tokenizer_from is not None:  # the base whose tokenizer this is (train --from checks it)
        manifest["tokenizer"]["from"] = os.fspath(tokenizer_from)
    _write_dataset(out_path, manifest, docs, is_val, ids, tok)
    _say(progress, f"wrote {out_path}")
    return out_path


STREAM_AUTO_BYTES = 256 << 20  # sources larger than this take the streaming path unless told


def _manifest(out_path: Path, files: Sequence[tuple[Path, str, int, str]], licenses: list[str],
              kept_per_source: list[int], options: dict[str, Any], steps: list[dict[str, Any]], tok: Tokenizer,
              dtype: str, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The manifest both paths write (``splits`` filled in by the writer); warns about unknown licenses."""
    if "unknown" in licenses:
        warnings.warn(f"license unknown for {licenses.count('unknown')} source file(s), e.g. "
                      f"{files[licenses.index('unknown')][0]}; pass --license to record it", stacklevel=3)
    manifest_sources = [
        {"path": str(path.resolve()), "sha256": sha, "bytes": size, "license": lic, "documents": kept,
         "encoding": enc}
        for (path, sha, size, enc), lic, kept in zip(files, licenses, kept_per_source, strict=True)
    ]
    digest = hashlib.sha256(json.dumps({
        "sources": sorted(s["sha256"] for s in manifest_sources),
        "options": options,
        "tokenizer": hashlib.sha256(tok.to_str().encode()).hexdigest(),
    }, sort_keys=True).encode()).hexdigest()
    return {
        "format": FORMAT,
        "gencraft_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": out_path.name,
        "sources": manifest_sources,
        "skipped": skipped,
        "options": options,
        "steps": steps,
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
        "splits": {},
        "dtype": dtype,
        "digest": digest,
    }


def _join_with_eos(seqs: Sequence[list[int]], eos_id: int, dtype: str) -> np.ndarray:
    """Concatenate token sequences, each followed by the end-of-text id, as little-endian ``dtype``."""
    total = sum(len(s) + 1 for s in seqs)
    out = np.empty(total, dtype=np.dtype(dtype).newbyteorder("<"))
    pos = 0
    for s in seqs:
        out[pos:pos + len(s)] = s
        pos += len(s)
        out[pos] = eos_id
        pos += 1
    return out


def combine(parts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """One dataset ``out`` made of prepared datasets ``parts`` that share one tokenizer (the first's;
    prepare the others with ``tokenizer_from``), read as their splits one after the other (training,
    the copy check, evaluation: through :func:`~gencraft.data.load_dataset`). Nothing is copied but
    the tokenizer: the manifest names each part (its path relative to ``out``) and its digest, so a
    part prepared again later is an error when ``out`` is read, never other data in silence.
    Duplicates across parts are not removed (each part was deduplicated on its own).

    ``out`` may replace an earlier combined dataset (not one of the parts): add a part, combine again.
    """
    if len(parts) < 2:
        raise UsageError(f"combining needs two or more datasets, got {len(parts)}", param="parts")
    out_path = dataset_path(out)
    opened = [load_dataset(p) for p in parts]
    if out_path.exists():
        old = out_path / "manifest.json"
        if not old.is_file() or "parts" not in json.loads(old.read_text(encoding="utf-8")):
            raise UsageError(f"--out {out_path} exists and is not a combined dataset; choose another name",
                             param="out")
        if any(d.path.resolve() == out_path.resolve() for d in opened):
            raise UsageError(f"--out {out_path} is one of the parts; combine into another name", param="out")
    first = opened[0]
    tok_digest = tokenizer_digest(first.path)
    for name, d in zip(parts[1:], opened[1:], strict=True):
        if tokenizer_digest(d.path) != tok_digest:
            raise DataError(f"{d.path}: its tokenizer is not {first.path}'s; prepare {name} again with "
                            f"--tokenizer-from {parts[0]}", param="parts")
    splits = {s: {k: sum(int(d.manifest["splits"].get(s, {}).get(k, 0)) for d in opened)
                  for k in ("documents", "tokens", "chars")} for s in ("train", "val")}
    manifest = {
        "format": FORMAT,
        "gencraft_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": out_path.name,
        "parts": [{"path": os.path.relpath(d.path.resolve(), out_path.resolve()), "name": d.name, "digest": d.digest}
                  for d in opened],
        "sources": [s for d in opened for s in d.sources()],
        "steps": [{"step": "combine", "parts": len(opened), "documents": splits["train"]["documents"]
                   + splits["val"]["documents"], "chars": splits["train"]["chars"] + splits["val"]["chars"]}],
        "tokenizer": first.manifest["tokenizer"],
        "splits": splits,
        "dtype": first.manifest["dtype"],
        "digest": hashlib.sha256(json.dumps([d.digest for d in opened]).encode()).hexdigest(),
    }
    with atomic_dir(out_path) as tmp:
        shutil.copyfile(first.path / "tokenizer.json", tmp / "tokenizer.json")
        write_json(tmp / "manifest.json", manifest)
    return out_path
