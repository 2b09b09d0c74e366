"""Benchmark: `gencraft data prepare` and the tokenizers on the shared corpora, on ONE core.

    .venv/bin/python bench/data_prepare.py [--cores 1] [--repeat 3]
    .venv/bin/python bench/data_prepare.py --big [--gb 3]   # a corpus larger than memory, streamed

``--big`` generates a corpus (many 1 MB files and one file of a third of it, with planted exact and
near copies), prepares a slice of it with the in-memory path and the streaming path side by side
(same dataset? same copies found?), then all of it streaming with 1 and 2 workers: MB/s, peak
resident memory of the process tree against the 1 GiB target, copies found. Needs ~5x the corpus
size free on disk (corpus, scratch, shards); everything is deleted at the end.

Prints our measured figures beside the reference in the same run:
- the issue's target for preparing tinyshakespeare / tang300 ("seconds on one core");
- nanoGPT's character encoder (`data/shakespeare_char/prepare.py`: a dict lookup per character
  into a numpy array), re-implemented here in three lines and timed on the same text, against our
  char tokenizer's ``encode_batch`` (which also handles unseen characters through byte fallback).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

SHARED = Path(os.environ.get("GENCRAFT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cores", type=int, default=1, help="pin to this many cores (tokenizers threads too)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("--big", action="store_true", help="a generated corpus larger than memory instead (see big())")
    ap.add_argument("--gb", type=float, default=3.0, help="--big: corpus size")
    ap.add_argument("--planted", type=int, default=1000, help="--big: exact and near copies planted (each)")
    ap.add_argument("--small-files", type=int, default=60, help="--big: files of the small-corpus comparison")
    ap.add_argument("--dir", default=None, help="--big: where to write the corpus (default a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="--big: keep the corpus")
    args = ap.parse_args()
    if args.big:
        return big(args)
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, set(cpus))
    os.environ["RAYON_NUM_THREADS"] = str(args.cores)  # before tokenizers starts its pool
    os.environ["GENCRAFT_HOME"] = tempfile.mkdtemp(prefix="gencraft-bench-")
    warnings.simplefilter("ignore")

    import numpy as np

    from gencraft.data import load_dataset, prepare
    from gencraft.tokenize import train_tokenizer

    shakespeare = SHARED / "tinyshakespeare.txt"
    tang = SHARED / "tang300.json"
    print(f"cores pinned: {len(cpus)} ({cpus}); best of {args.repeat}; corpora from {SHARED}")
    print()
    print(f"{'job':<52} {'ours':>10} {'reference':>22}")

    jobs = [
        ("prepare tinyshakespeare, char, dedupe on", [shakespeare], {}),
        ("prepare tinyshakespeare, bpe 8000, dedupe on", [shakespeare], {"tokenizer": "bpe"}),
        ("prepare tinyshakespeare, char, --no-dedupe", [shakespeare], {"dedupe": False}),
        ("prepare tang300.json --field paragraphs, char", [tang], {"field": "paragraphs"}),
        ("prepare tang300.json --field paragraphs, bpe", [tang], {"field": "paragraphs", "tokenizer": "bpe"}),
    ]
    for label, src, kw in jobs:
        t, path = best_of(lambda src=src, kw=kw: prepare(src, "bench", license="public-domain", **kw), args.repeat)
        s = load_dataset(path).manifest["splits"]
        toks = s["train"]["tokens"] + s["val"]["tokens"]
        print(f"{label:<52} {t:>9.2f}s {'target: seconds':>22}   ({toks:,} tokens)")

    text = shakespeare.read_text(encoding="utf-8")
    docs = text.split("\n\n")
    tok = train_tokenizer("char", docs)

    def nanogpt_encode() -> np.ndarray:
        chars = sorted(set(text))
        stoi = {ch: i for i, ch in enumerate(chars)}
        return np.array([stoi[c] for c in text], dtype=np.uint16)

    def ours_encode() -> int:
        return sum(len(i) for i in tok.encode_batch(docs))

    t_ref, ref = best_of(nanogpt_encode, args.repeat)
    t_ours, n = best_of(ours_encode, args.repeat)
    print(f"{'char-encode tinyshakespeare (1.1M chars)':<52} {t_ours:>9.2f}s {t_ref:>14.2f}s nanoGPT"
          f"   ({n:,} vs {len(ref):,} tokens)")
    print(f"{'  = chars/s':<52} {len(text) / t_ours / 1e6:>8.2f}M/s {len(text) / t_ref / 1e6:>13.2f}M/s")
    return 0


# ---- --big: a corpus larger than memory ----------------------------------------------------------

def _vocabulary(rng) -> tuple:
    """30,000 pseudo-words from syllables, drawn by a Zipf law as words in text are; the bytes of
    each (with its space) back to back, so a document is rendered by one numpy gather."""
    import numpy as np

    syl = [a + b for a in "bcdfghklmnprstvwz" for b in "aeiou"] + ["th", "st", "ng", "qu"]
    words = sorted({"".join(rng.choice(syl, size=rng.integers(1, 4))) for _ in range(60000)})[:30000]
    rng.shuffle(words)
    blobs = [(w + " ").encode() for w in words] + [b".\n\n"]  # the last one ends a document
    lens = np.array([len(b) for b in blobs], dtype=np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), lens, offs, p / p.sum()


def make_corpus(root: Path, gb: float, planted: int, seed: int = 0) -> dict:
    """``gb`` GB of documents of 70-860 words: the first third in 1 MB files under ``a/``, the second
    in one file ``m_big.txt``, the last in 1 MB files under ``z/``; and ``planted`` exact and
    ``planted`` near copies (3% of the words changed: Jaccard ~0.9 on 5-character shingles) of
    documents of the first half, each at a random later place. Returns the digests
    (``dedupe.exact_key`` of the cleaned text) of the copies, to score what was found."""
    import numpy as np

    from gencraft.data.clean import normalize_whitespace
    from gencraft.data.dedupe import exact_key

    rng = np.random.default_rng(seed)
    flat, lens, offs, p = _vocabulary(rng)
    end = len(lens) - 1
    total = int(gb * 1e9)
    n_docs = total // 3300
    originals = rng.choice(n_docs // 2, size=2 * planted, replace=False)
    wanted = set(originals.tolist())
    later: dict[int, list[tuple[int, bool]]] = {}  # document -> copies written after it
    for k, o in enumerate(originals.tolist()):
        later.setdefault(int(rng.integers(o + 1, n_docs)), []).append((o, k < planted))
    words_of: dict[int, tuple[np.ndarray, Path]] = {}
    truth: dict = {"exact": set(), "near": set(), "files": {}}  # files: copy digest -> (original's file, copy's)

    def render(words: np.ndarray) -> bytes:
        ids = np.append(words, end)
        ln = lens[ids]
        idx = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln) + np.repeat(offs[ids], ln)
        return flat[idx].tobytes()

    (root / "a").mkdir(parents=True)
    (root / "z").mkdir()
    written, doc, file_no, out, out_path = 0, 0, 0, None, None
    while written < total:
        third = min(2, written * 3 // total)
        path = root / "m_big.txt" if third == 1 else root / "az"[third // 2] / f"{file_no:05d}.txt"
        if path != out_path:
            if out is not None:
                out.close()
            out, out_path = open(path, "wb"), path
        ids = rng.choice(end, size=300_000, p=p)
        sizes = rng.integers(70, 860, size=600)
        cuts = np.cumsum(sizes)
        pieces = []
        for a, b in zip((cuts - sizes).tolist(), cuts.tolist(), strict=True):
            if b > len(ids):
                break
            words = ids[a:b]
            pieces.append(render(words))
            if doc in wanted:
                words_of[doc] = (words, path)
            for o, exact in later.get(doc, ()):
                w, where = words_of.pop(o)
                w = w.copy()
                if not exact:
                    hit = rng.random(len(w)) < 0.03
                    w[hit] = rng.choice(end, size=int(hit.sum()), p=p)
                pieces.append(render(w))
                key = exact_key(normalize_whitespace(pieces[-1].decode()))
                truth["exact" if exact else "near"].add(key)
                truth["files"][key] = (where, path)
            doc += 1
        blob = b"".join(pieces)
        out.write(blob)
        written += len(blob)
        if third != 1 and out.tell() >= 1_000_000:
            file_no += 1
    out.close()
    return truth


def score(dataset: Path, truth: dict, files: set[Path] | None = None) -> dict[str, int]:
    """Planted copies found: an exact copy when its text is kept once, a near copy when it is gone
    (``files``: only the pairs whose original and copy both lie in these files)."""
    from gencraft.data import load_dataset
    from gencraft.data.dedupe import exact_key

    if files is not None:
        inside = {k for k, (a, b) in truth["files"].items() if a in files and b in files}
        truth = {"exact": truth["exact"] & inside, "near": truth["near"] & inside}
    seen: dict[int, int] = {}
    planted = truth["exact"] | truth["near"]
    for d in load_dataset(dataset).documents():
        k = exact_key(d["text"])
        if k in planted:
            seen[k] = seen.get(k, 0) + 1
    return {"exact": sum(seen.get(k, 0) == 1 for k in truth["exact"]), "near": sum(k not in seen for k in truth["near"]),
            "planted exact": len(truth["exact"]), "planted near": len(truth["near"])}


def run_prepare(args: list[str], home: Path) -> dict[str, float]:
    """``gencraft data prepare ARGS`` in a process of its own: wall seconds and peak resident memory
    of its whole process tree (sampled every 0.1 s: the sum over processes, and the largest one)."""
    import subprocess

    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gencraft", "data", "prepare", *args, "-q"],
                            env=dict(os.environ, GENCRAFT_HOME=str(home)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        try:
            rss = [q.memory_info().rss for q in [root, *root.children(recursive=True)]]
        except psutil.Error:
            rss = []
        if rss:
            peak_sum, peak_one = max(peak_sum, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"gencraft data prepare failed:\n{out}")
    return {"wall": time.perf_counter() - t0, "peak_sum": peak_sum, "peak_one": peak_one}


def big(args) -> int:
    """The issue's measurement: a >= 3 GB corpus prepared with 1 and 2 workers."""
    import shutil

    from gencraft.data import load_dataset

    root = Path(args.dir or tempfile.mkdtemp(prefix="gencraft-big-", dir="/tmp"))
    home = Path(tempfile.mkdtemp(prefix="gencraft-bench-home-"))
    try:
        t = time.perf_counter()
        truth = make_corpus(root / "corpus", args.gb, args.planted)
        files = sorted(p for p in (root / "corpus").rglob("*.txt"))
        size = sum(p.stat().st_size for p in files)
        print(f"corpus: {size / 1e9:.2f} GB in {len(files)} files (one of {(root / 'corpus' / 'm_big.txt').stat().st_size / 1e9:.2f}"
              f" GB), {len(truth['exact'])} exact and {len(truth['near'])} near copies planted; made in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        small = sorted((root / "corpus" / "a").glob("*.txt"))[: args.small_files]
        small_mb = sum(p.stat().st_size for p in small) / 1e6
        print(f"\nsmall corpus (its first {len(small)} files, {small_mb:.0f} MB): the in-memory path beside streaming")
        rows = []
        for name, extra in (("in memory", ["--no-stream"]), ("streaming, 2 workers", ["--workers", "2"])):
            r = run_prepare([*map(str, small), "--out", str(home / name.replace(" ", "_").replace(",", "")), *extra], home)
            got = score(home / name.replace(" ", "_").replace(",", ""), truth, set(small))
            rows.append((name, r, got))
            print(f"  {name:<22} {small_mb / r['wall']:6.1f} MB/s  peak RSS {r['peak_sum'] / 2**20:6.0f} MiB "
                  f"(largest process {r['peak_one'] / 2**20:.0f})", flush=True)
        a, b = (load_dataset(home / n) for n in ("in_memory", "streaming_2_workers"))
        same = a.manifest["digest"] == b.manifest["digest"] and a.manifest["steps"] == b.manifest["steps"]
        print(f"  same dataset (manifest digest, steps): {same}; planted copies inside it found: "
              f"in memory {rows[0][2]}, streaming {rows[1][2]}")
        for n in ("in_memory", "streaming_2_workers"):
            shutil.rmtree(home / n)
        print(f"\nwhole corpus ({size / 1e9:.2f} GB), streaming, char tokenizer; target: peak RSS <= 1 GiB")
        digests = []
        for w in (1, 2):
            out = home / f"big{w}"
            r = run_prepare([str(root / "corpus"), "--out", str(out), "--workers", str(w)], home)
            m = load_dataset(out).manifest
            got = score(out, truth)
            steps = {s["step"]: s for s in m["steps"]}
            digests.append(m["digest"])
            print(f"  {w} worker{'s' if w > 1 else ' '}  {size / 1e6 / r['wall']:6.1f} MB/s ({r['wall']:.0f} s)  "
                  f"peak RSS {r['peak_sum'] / 2**20:5.0f} MiB (largest process {r['peak_one'] / 2**20:.0f}) "
                  f"{'<= 1 GiB' if r['peak_sum'] <= 2**30 else '> 1 GiB (MISSED)'} | "
                  f"{m['splits']['train']['tokens'] + m['splits']['val']['tokens']:,} tokens in "
                  f"{len(m['shards']['train']) + len(m['shards']['val'])} shards | removed: exact "
                  f"{steps['exact_dedupe']['removed']:,}, near {steps['near_dedupe']['removed']:,} | planted found: "
                  f"exact {got['exact']}/{got['planted exact']}, near {got['near']}/{got['planted near']}", flush=True)
            shutil.rmtree(out)
        print(f"  1 and 2 workers wrote the same dataset (manifest digest): {digests[0] == digests[1]}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
