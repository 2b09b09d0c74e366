"""Streaming `data prepare` (corpora larger than memory): the same dataset as the in-memory path,
byte for byte, from every reader; duplicate finding in bounded memory; shards read as one array."""

from __future__ import annotations

import codecs
import json
import random
from pathlib import Path

import numpy as np
import pytest

from gencraft.data import dedupe as D
from gencraft.data import load_dataset, prepare
from gencraft.data.dataset import TokenShards, tokens_seen
from gencraft.errors import UsageError

WORDS = ("amber basalt cinder delta ember fjord garnet harbor indigo juniper kelp lantern meadow nectar "
         "obsidian pewter quartz raven saffron tundra").split()


def corpus(root: Path) -> Path:
    """Every reader and encoding the streaming path treats differently, with planted duplicates."""
    rnd = random.Random(1)
    paras = [" ".join(rnd.choice(WORDS) + str(rnd.randint(0, 99)) for _ in range(rnd.randint(5, 40)))
             for _ in range(150)]
    big = []
    for i, p in enumerate(paras):
        big.append(p)
        if i % 17 == 0:
            big.append(paras[i // 2])  # an exact duplicate of an earlier paragraph
        if i % 19 == 0:
            big.append(paras[i // 3].replace(" ", "  ", 1) + " x")  # a near duplicate
    seps = ["\n\n", "\r\n\r\n", "\n \n\t", "\n\n\n\n", "\n\r\n"]
    root.mkdir()
    # > 64 KB: read as paragraphs (breaks of every kind, CRLF, a last lone \r)
    (root / "big.txt").write_text("".join(p + rnd.choice(seps) for p in big * 3) + "tail\r", newline="")
    (root / "bom.txt").write_bytes(codecs.BOM_UTF8 + "\n\n".join(paras[:20]).encode())
    (root / "chinese.txt").write_bytes(("床前明月光，疑是地上霜。\n\n舉頭望明月，低頭思故鄉。\n\n" * 1500).encode("gb18030"))
    with open(root / "recs.jsonl", "w", encoding="utf-8") as f:
        for i, p in enumerate(paras * 4):
            f.write(json.dumps({"text": p + (" é" if i % 7 else "")}) + ("\n\n" if i % 50 == 0 else "\n"))
    (root / "small.txt").write_text(paras[7], encoding="utf-8")
    (root / "page.html").write_text(f"<p>{paras[9]}</p><p>{paras[10]}</p>", encoding="utf-8")
    (root / "blank.txt").write_text("   \n\n  ", encoding="utf-8")
    lines = "\n".join(" ".join(rnd.choice(WORDS) + str(rnd.randint(0, 999)) for _ in range(rnd.randint(3, 12)))
                      for _ in range(1300))
    (root / "lines.txt").write_text(lines, encoding="utf-8")  # > 64 KB, one paragraph: read as lines
    return root


def same_dataset(a: Path, b: Path) -> None:
    A, B = load_dataset(a), load_dataset(b)
    assert B.manifest["shards"] and "shards" not in A.manifest
    for split in ("train", "val"):
        whole = (a / f"{split}.bin").read_bytes()
        parts = b"".join((b / name).read_bytes() for name, _ in B.manifest["shards"][split])
        assert whole == parts, split
        assert np.array_equal(np.asarray(getattr(A, f"{split}_ids")()), np.asarray(getattr(B, f"{split}_ids")()))
    assert (a / "documents.jsonl").read_bytes() == b"".join((b / n).read_bytes() for n in B.manifest["shards"]["documents"])
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    for key in ("digest", "sources", "steps", "splits", "options", "tokenizer", "dtype"):
        assert A.manifest[key] == B.manifest[key], key


@pytest.mark.parametrize("options, stream", [
    (dict(), dict(stream=True, chunk_chars=4000, stream_bytes=50_000)),  # big files streamed, small ones read by workers
    (dict(tokenizer="bpe", vocab_size=300, split="tail", unit="paragraph", min_chars=20, max_chars=400),
     dict(chunk_chars=10_000, stream_bytes=1, workers=2)),  # every .txt/.jsonl streamed, two processes
])
def test_streaming_gives_the_in_memory_dataset_byte_for_byte(tmp_path, options, stream):
    src = corpus(tmp_path / "corpus")
    a = prepare([src], tmp_path / "mem", field="text", stream=False, license="CC0-1.0", **options)
    b = prepare([src], tmp_path / "str", field="text", license="CC0-1.0", **options, **stream)
    same_dataset(a, b)
    steps = {s["step"]: s for s in load_dataset(b).manifest["steps"]}
    assert steps["exact_dedupe"]["removed"] > 0 and steps["near_dedupe"]["removed"] > 0
    assert len(load_dataset(b).manifest["shards"]["train"]) > 1


def test_one_document_split_at_its_tail(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("one long text without any paragraph break " * 40, encoding="utf-8")
    a = prepare([f], tmp_path / "mem", split="tail", unit="file", stream=False)
    b = prepare([f], tmp_path / "str", split="tail", unit="file", stream=True)
    same_dataset(a, b)


def test_signatures_in_c_and_numpy_agree():
    rnd = random.Random(3)
    texts = ["", "a", "abcd", "白日依山盡，黄河入海流。"] + [
        "".join(rnd.choice("ab cd\nefg爱") for _ in range(rnd.randint(0, 600))) for _ in range(40)]
    if D._lib() is None:
        pytest.skip("no C compiler here")
    assert np.array_equal(D.signatures(texts), D.oph_numpy(texts))
    assert D.lsh_params(0.7) == (14, 9)  # datasketch's MinHashLSH picks the same bands for 128 bins


def test_bounded_dedupe_memory_forgets_the_oldest_documents():
    """Duplicates are found within the documents held; with too little memory the oldest fall out
    and their later copies are kept: the recall cost, counted in ``forgotten``."""
    rnd = random.Random(5)
    docs = [" ".join(rnd.choice(WORDS) + str(rnd.randint(0, 999)) for _ in range(30)) for _ in range(3000)]
    texts = docs + docs[-50:] + docs[:50]  # copies of the newest 50 and of the oldest 50
    per_doc = D.Deduper.bytes_per_document(0.8)
    small = D.Deduper(0.8, texts.__getitem__, memory=2 * 1000 * per_doc)  # holds 1,000 to 2,000 documents
    keep = np.concatenate([small.keep(texts[i:i + 500], np.arange(i, min(i + 500, len(texts))))
                           for i in range(0, len(texts), 500)])
    assert small.forgotten > 0 and small.nbytes <= 2 * 1000 * per_doc
    assert not keep[3000:3050].any()  # the recent copies are found
    assert keep[3050:].all()  # the old ones fell out of memory
    full = D.Deduper(0.8, texts.__getitem__)
    assert not full.keep(texts, np.arange(len(texts)))[3000:].any()


def test_token_shards_read_as_one_array():
    parts = [np.arange(0, 5, dtype="<u2"), np.arange(5, 6, dtype="<u2"), np.arange(6, 20, dtype="<u2")]
    t = TokenShards(parts)
    whole = np.arange(20, dtype="<u2")
    assert len(t) == 20 and t[5] == 5 and t[-1] == 19
    for a, b in [(0, 20), (3, 7), (4, 6), (5, 6), (0, 5), (6, 20), (2, 19), (7, 7)]:
        assert np.array_equal(t[a:b], whole[a:b]), (a, b)
    assert np.array_equal(np.asarray(t, dtype=np.int64), whole)
    seen = tokens_seen(TokenShards([np.array([3, 3, 9], dtype="<u2"), np.array([1], dtype="<u2")]), 12)
    assert seen.tolist() == [i in (1, 3, 9) for i in range(12)]  # counted shard by shard


def test_training_reads_a_sharded_dataset(tmp_path):
    import torch

    from gencraft.train.data import get_batch
    from gencraft.train.data import load_dataset as train_dataset

    src = corpus(tmp_path / "corpus")
    ds = prepare([src / "big.txt"], tmp_path / "str", workers=0, chunk_chars=5000, stream_bytes=1)
    d = train_dataset(ds)
    assert isinstance(d.train, TokenShards) and len(d.train) == load_dataset(ds).manifest["splits"]["train"]["tokens"]
    x, y = get_batch(d.train, 64, 32, torch.Generator().manual_seed(0))
    assert x.shape == (64, 32) and torch.equal(x[:, 1:], y[:, :-1])


def test_bad_streaming_options_are_one_line_errors(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("some text\n", encoding="utf-8")
    with pytest.raises(UsageError, match="--workers -1"):
        prepare([f], tmp_path / "x", workers=-1)
    with pytest.raises(UsageError, match="dedupe_memory"):
        prepare([f], tmp_path / "x", stream=True, dedupe_memory=10)


def test_combined_datasets_read_as_one(tmp_path, cli, gencraft_home):
    """More data with the first dataset's tokenizer (streamed), combined: read as the parts one after
    the other; a part prepared again, or with its own tokenizer, is a one-line error, never other data."""
    import torch

    from gencraft.data import combine
    from gencraft.errors import DataError
    from gencraft.train.data import get_batch
    from gencraft.train.data import load_dataset as train_dataset

    src = corpus(tmp_path / "corpus")
    base = prepare([src / "big.txt"], gencraft_home / "datasets" / "base", license="CC0-1.0")
    more = prepare([src / "lines.txt", src / "chinese.txt"], gencraft_home / "datasets" / "more",
                   tokenizer_from="base", license="CC0-1.0", stream=True, chunk_chars=20_000, stream_bytes=1)
    assert (base / "tokenizer.json").read_bytes() == (more / "tokenizer.json").read_bytes()
    B, M = load_dataset(base), load_dataset(more)
    assert len(M.manifest["shards"]["train"]) > 1
    assert "床" not in B.tokenizer.decode(np.unique(np.asarray(B.train_ids())).tolist())  # base never saw Chinese:
    assert B.tokenizer.decode(B.tokenizer.encode("床前明月光")) == "床前明月光"  # byte fallback carries it

    r = cli("data", "combine", "base", "more", "--out", "both")
    assert r.code == 0, r.err
    C = load_dataset("both")
    for split in ("train", "val"):
        want = np.concatenate([np.asarray(getattr(B, f"{split}_ids")()), np.asarray(getattr(M, f"{split}_ids")())])
        assert np.array_equal(np.asarray(getattr(C, f"{split}_ids")()), want), split
        assert C.manifest["splits"][split]["tokens"] == len(want)
    docs = list(C.documents())
    assert [d["id"] for d in docs] == list(range(len(docs)))
    assert {C.sources()[d["source"]]["path"] for d in docs} == {str((src / n).resolve())
                                                               for n in ("big.txt", "lines.txt", "chinese.txt")}
    d = train_dataset("both")
    x, y = get_batch(d.train, 64, 32, torch.Generator().manual_seed(0))
    assert x.shape == (64, 32) and torch.equal(x[:, 1:], y[:, :-1])

    # a third part: combine again into the same name (not into one of its parts)
    prepare([src / "small.txt", src / "page.html"], gencraft_home / "datasets" / "third", tokenizer_from="base",
            license="CC0-1.0")
    assert combine(["both", "third"], "both2").exists()
    assert cli("data", "combine", "base", "more", "third", "--out", "both").code == 0
    assert len(load_dataset("both").parts) == 3
    with pytest.raises(DataError, match="changed since it was combined"):
        load_dataset("both2")  # it named "both" as it was
    bad = cli("data", "combine", "both", "third", "--out", "both")
    assert bad.code == 2 and "is one of the parts" in bad.err

    # errors: another tokenizer; a part prepared again since
    prepare([src / "chinese.txt"], gencraft_home / "datasets" / "own", license="CC0-1.0")
    bad = cli("data", "combine", "base", "own", "--out", "mixed")
    assert bad.code == 2 and "--tokenizer-from base" in bad.err and len(bad.err.strip().splitlines()) == 1
    assert not (gencraft_home / "datasets" / "mixed").exists()
    prepare([src / "lines.txt"], gencraft_home / "datasets" / "more", tokenizer_from="base", license="CC0-1.0")  # other sources
    with pytest.raises(DataError, match="changed since it was combined"):
        load_dataset("both")
    bad = cli("train", "both", "--model", "gpt", "--preset", "tiny")
    assert bad.code == 2 and "gencraft data combine" in bad.err and len(bad.err.strip().splitlines()) == 1
