"""The data pipeline: readers, encodings, cleaning, dedupe, split, manifest, CLI and bad input."""

from __future__ import annotations

import codecs
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gencraft.data import load_dataset, prepare
from gencraft.data.clean import normalize_unicode, normalize_whitespace, remove_control
from gencraft.data.dedupe import exact_dedupe, jaccard, near_dedupe
from gencraft.data.prepare import _split_hash, _split_tail
from gencraft.data.readers import decode_bytes, read_file
from gencraft.errors import DataError, UsageError

POEM = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。"


def distinct_docs(n: int) -> list[str]:
    """n clearly different short documents (no two are near duplicates)."""
    words = ["amber", "basalt", "cinder", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
             "kelp", "lantern", "meadow", "nectar", "obsidian", "pewter", "quartz", "raven", "saffron", "tundra"]
    return [f"Doc {i}: " + " ".join(words[(i * 7 + j * 3) % len(words)] + str(i * j) for j in range(8))
            for i in range(n)]


def write_corpus(folder: Path, n: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(distinct_docs(n)):
        (folder / f"doc{i:02d}.txt").write_text(d + "\n", encoding="utf-8")
    return folder


def datasets_left(home: Path) -> list[str]:
    d = home / "datasets"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- readers and encodings


def test_text_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\nworld\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\n*kept* as written\n", encoding="utf-8")
    assert read_file(tmp_path / "a.txt").documents == ["hello\nworld\n"]
    f = read_file(tmp_path / "b.md")
    assert f.documents == ["# Title\n\n*kept* as written\n"] and f.encoding == "utf-8" and len(f.sha256) == 64


def test_html_text_only(tmp_path: Path) -> None:
    page = ("<html><head><title>T</title><style>p {color: red}</style></head><body>"
            "<script>var x = 'no';</script><h1>The  Kettle</h1><p>Fish &amp; chips<br>tonight</p>"
            "<div>明月 &lt;3</div></body></html>")
    (tmp_path / "p.html").write_text(page, encoding="utf-8")
    [text] = read_file(tmp_path / "p.html").documents
    assert "var x" not in text and "color" not in text and "<" not in text.replace("<3", "")
    assert text.split("\n") == ["The Kettle", "", "Fish & chips", "tonight", "", "明月 <3"]
    (tmp_path / "code.htm").write_text("<p>Code:</p><pre>def f():\n    return 1\n</pre><p>  after   it </p>",
                                       encoding="utf-8")
    assert read_file(tmp_path / "code.htm").documents == ["Code:\n\ndef f():\n    return 1\n\nafter it"]


def test_json_fields(tmp_path: Path) -> None:
    records = [{"title": "A", "body": {"lines": ["one", "two"]}}, {"title": "B", "body": {"lines": ["three"]}}]
    (tmp_path / "r.json").write_text(json.dumps(records), encoding="utf-8")
    assert read_file(tmp_path / "r.json", field="body.lines").documents == ["one\ntwo", "three"]
    assert read_file(tmp_path / "r.json", field="title").documents == ["A", "B"]
    (tmp_path / "one.json").write_text(json.dumps({"text": "single"}), encoding="utf-8")
    assert read_file(tmp_path / "one.json", field="text").documents == ["single"]
    (tmp_path / "s.json").write_text(json.dumps(["x", "y"]), encoding="utf-8")
    assert read_file(tmp_path / "s.json").documents == ["x", "y"]
    (tmp_path / "r.jsonl").write_text('{"t": "a"}\n\n{"t": ["b", "c"]}\n', encoding="utf-8")
    assert read_file(tmp_path / "r.jsonl", field="t").documents == ["a", "b\nc"]
    with pytest.raises(DataError, match=r"r\.json: record 2 has no field 'body.lines.1'"):
        read_file(tmp_path / "r.json", field="body.lines.1")  # record 1 has two lines, record 2 one
    with pytest.raises(DataError, match=r"r\.json: record 1 is an object; pass --field"):
        read_file(tmp_path / "r.json")
    (tmp_path / "m.jsonl").write_text('{"t": "a"}\n\n{"u": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.jsonl: record on line 3 has no field 't' \(it has: u\)"):
        read_file(tmp_path / "m.jsonl", field="t")


def test_csv_column(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text('id,text\n1,"hello, world"\n2,"two\nlines"\n', encoding="utf-8")
    assert read_file(tmp_path / "c.csv", column="text").documents == ["hello, world", "two\nlines"]
    with pytest.raises(DataError, match=r"c\.csv: no column 'body' \(it has: id, text\)"):
        read_file(tmp_path / "c.csv", column="body")
    with pytest.raises(DataError, match="--column"):
        read_file(tmp_path / "c.csv")
    (tmp_path / "one.csv").write_text("text\nonly\n", encoding="utf-8")
    assert read_file(tmp_path / "one.csv").documents == ["only"]


@pytest.mark.parametrize("codec,bom,name", [
    ("utf-8", codecs.BOM_UTF8, "utf-8-sig"),
    ("utf-16-le", codecs.BOM_UTF16_LE, "utf-16-le"),
    ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16-be"),
    ("gb18030", b"", "gb18030"),
])
def test_encodings(tmp_path: Path, codec: str, bom: bytes, name: str) -> None:
    text = POEM + "\nASCII too: 123.\n"
    p = tmp_path / "poem.txt"
    p.write_bytes(bom + text.encode(codec))
    f = read_file(p)
    assert f.documents == [text] and f.encoding == name


def test_undecodable_and_binary(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="bin.txt: looks like a binary file"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "bin.txt")
    with pytest.raises(DataError, match="ctrl.txt: looks like a binary"):
        decode_bytes(bytes(range(1, 32)) * 10, "ctrl.txt")
    # Latin-1 text is neither UTF-8 nor plausible GB18030
    with pytest.raises(DataError, match="latin.txt: undecodable bytes"):
        decode_bytes("Crème brûlée à la carte, señor.\n".encode("latin-1"), "latin.txt")
    # random high bytes that happen to decode as GB18030 are not accepted as Chinese
    rng = np.random.default_rng(0)
    noise = bytes(rng.integers(0x81, 0xFF, 400, dtype=np.uint8))
    with pytest.raises(DataError, match="noise.txt"):
        decode_bytes(noise, "noise.txt")


def test_units(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("a1\na2\n\n\nb1\n  \nc1\n", encoding="utf-8")
    assert read_file(p).documents == ["a1\na2\n\n\nb1\n  \nc1\n"]  # small file: one document
    assert read_file(p, unit="paragraph").documents == ["a1\na2", "b1", "c1\n"]
    assert read_file(p, unit="line").documents == ["a1", "a2", "b1", "c1"]
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(f"paragraph {i} " + "x" * 200 for i in range(400)), encoding="utf-8")
    assert len(read_file(big).documents) == 400  # auto: a large plain-text file splits into paragraphs
    assert len(read_file(big, unit="file").documents) == 1
    lines = tmp_path / "lines.txt"  # big and no blank lines at all: one document per line
    lines.write_text("\n".join(f"line {i} " + "y" * 100 for i in range(1000)), encoding="utf-8")
    assert len(read_file(lines).documents) == 1000


# ---------------------------------------------------------------- cleaning, dedupe, split


def test_cleaning_steps() -> None:
    assert normalize_unicode("e\u0301", "NFC") == "\u00e9"
    assert normalize_unicode("ｆｕｌｌ①", "NFKC") == "full1"
    assert normalize_unicode("ｆｕｌｌ", "NFC") == "ｆｕｌｌ"
    assert remove_control("a\x00b\x1b[0m\tc\r\nd\u0085e\ufeff") == "ab[0m\tc\nde"
    assert normalize_whitespace("\n\n  title  \r\nline \t\n\n\n\n\nnext\n\n") == "  title\nline\n\nnext"


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_cleaning_properties(text: str) -> None:
    once = normalize_whitespace(remove_control(normalize_unicode(text, "NFC")))
    assert normalize_whitespace(remove_control(normalize_unicode(once, "NFC"))) == once  # idempotent
    assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in once)
    assert "\n\n\n" not in once and not once.startswith("\n") and once == once.rstrip()
    assert all(line == line.rstrip(" \t") for line in once.split("\n"))


def test_exact_and_near_dedupe() -> None:
    a = "The lighthouse keeper counted the ships every night and wrote their names in a blue ledger."
    a_near = "The lighthouse keeper counted the ships every night and wrote their names in a red ledger."
    b = "Seven foxes crossed the frozen river at dawn, leaving tracks that the snow soon covered."
    c_zh = "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。\n此詩寫登樓遠望之景，氣勢開闊。"
    c_zh_near = "白日依山盡，黄河入海流。\n欲窮千里目，更上一層樓。\n此詩寫登樓遠望之景，氣勢開闊。"
    d_zh = "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。\n此詩寫春晨醒來之感，清新自然。"
    assert jaccard(a, a_near) > 0.8 and jaccard(a, b) < 0.2
    assert jaccard(c_zh, c_zh_near) > 0.8 and jaccard(c_zh, d_zh) < 0.2
    texts = [a, b, a, c_zh, a_near, d_zh, c_zh_near]
    assert exact_dedupe(texts) == [0, 1, 3, 4, 5, 6]
    assert near_dedupe(texts, 0.8) == [0, 1, 3, 5]  # exact copies are near duplicates too
    assert near_dedupe(texts, 0.99) == [0, 1, 3, 4, 5, 6]  # a strict threshold keeps the variants


def test_split_determinism() -> None:
    texts = distinct_docs(200)
    s0 = _split_hash(texts, 0.1, seed=0)
    assert s0 == _split_hash(texts, 0.1, seed=0)
    assert s0 != _split_hash(texts, 0.1, seed=1)
    assert 5 <= sum(s0) <= 40
    # a document's split does not depend on the others or their order
    rev = _split_hash(texts[::-1], 0.1, seed=0)[::-1]
    assert rev == s0
    assert sum(_split_hash(texts[:2], 0.01, seed=0)) == 1  # at least one validation document
    assert sum(_split_hash(texts[:2], 0.99, seed=0)) == 1  # and at least one for training
    tail = _split_tail(["x" * 10] * 10, 0.2)
    assert tail == [False] * 8 + [True] * 2
    assert _split_tail(["a", "b"], 0.01) == [False, True]


# ---------------------------------------------------------------- prepare and the manifest


def test_prepare_manifest_and_files(tmp_path: Path, gencraft_home: Path) -> None:
    src = write_corpus(tmp_path / "corpus")
    (src / "sub").mkdir()
    (src / "sub" / "dup.txt").write_text(distinct_docs(12)[3] + "\n", encoding="utf-8")  # exact duplicate
    (src / "sub" / "notes.rtf").write_text("{\\rtf1}", encoding="utf-8")  # skipped and reported
    (src / ".hidden.txt").write_text("secret", encoding="utf-8")  # hidden: passed over
    licenses = {str(src): "CC-BY-4.0", str(src / "sub"): "CC0-1.0"}
    with pytest.warns(UserWarning, match="notes.rtf"):
        path = prepare([src], "toy", license=licenses, val_fraction=0.25, seed=3)
    assert path == gencraft_home / "datasets" / "toy"
    assert sorted(p.name for p in path.iterdir()) == [
        "documents.jsonl", "manifest.json", "tokenizer.json", "train.bin", "val.bin"]
    m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert m["format"] == 1 and m["name"] == "toy" and m["dtype"] == "uint16"
    assert len(m["sources"]) == 13
    by_name = {Path(s["path"]).name: s for s in m["sources"]}
    assert by_name["doc00.txt"]["license"] == "CC-BY-4.0" and by_name["dup.txt"]["license"] == "CC0-1.0"
    assert by_name["dup.txt"]["documents"] == 0 and by_name["doc03.txt"]["documents"] == 1
    assert by_name["doc00.txt"]["bytes"] == (src / "doc00.txt").stat().st_size
    assert {s["encoding"] for s in m["sources"]} == {"utf-8"}
    assert [s["path"] for s in m["skipped"]] == [str(src / "sub" / "notes.rtf")]
    steps = {s["step"]: s for s in m["steps"]}
    assert list(steps) == ["read", "normalize", "control_chars", "whitespace", "exact_dedupe", "near_dedupe",
                           "length_filter"]
    assert steps["read"]["documents"] == 13 and steps["exact_dedupe"]["removed"] == 1
    assert steps["length_filter"]["documents"] == 12
    assert m["options"]["seed"] == 3 and m["options"]["val_fraction"] == 0.25
    assert m["tokenizer"]["kind"] == "char" and m["tokenizer"]["eos_id"] == 0

    ds = load_dataset("toy")
    docs = list(ds.documents())
    assert [d["id"] for d in docs] == list(range(12))
    assert sorted(d["text"] for d in docs) == sorted(distinct_docs(12))
    for split, ids in (("train", ds.train_ids()), ("val", ds.val_ids())):
        mine = [d["text"] for d in docs if d["split"] == split]
        assert isinstance(ids, np.memmap) and ids.dtype == np.dtype("<u2")
        assert m["splits"][split] == {"documents": len(mine), "tokens": len(ids), "chars": sum(map(len, mine))}
        # documents in order, each followed by the end-of-text id
        assert ids[-1] == ds.tokenizer.eos_id and int((ids == ds.tokenizer.eos_id).sum()) == len(mine)
        ends = np.flatnonzero(ids == ds.tokenizer.eos_id)
        starts = np.concatenate([[0], ends[:-1] + 1])
        assert [ds.tokenizer.decode(ids[s:e].tolist()) for s, e in zip(starts, ends, strict=True)] == mine
    assert m["splits"]["val"]["documents"] >= 1

    # same inputs -> same digest and the same bytes; a different seed -> a different digest
    with pytest.warns(UserWarning, match="notes.rtf"):
        again = json.loads((prepare([src], "toy2", license=licenses, val_fraction=0.25, seed=3)
                            / "manifest.json").read_text(encoding="utf-8"))
    assert again["digest"] == m["digest"]
    assert (gencraft_home / "datasets/toy2/train.bin").read_bytes() == (path / "train.bin").read_bytes()
    with pytest.warns(UserWarning, match="notes.rtf"):
        other = json.loads((prepare([src], "toy3", license=licenses, val_fraction=0.25, seed=4)
                            / "manifest.json").read_text(encoding="utf-8"))
    assert other["digest"] != m["digest"]


def test_prepare_bpe_and_options(tmp_path: Path) -> None:
    src = write_corpus(tmp_path / "c", 30)
    with pytest.warns(UserWarning, match="license unknown"):
        path = prepare([src], str(tmp_path / "out"), tokenizer="bpe", vocab_size=300, min_chars=10,
                       max_chars=10_000, split="tail", normalization="nfkc")
    ds = load_dataset(path)
    assert ds.manifest["tokenizer"]["kind"] == "bpe" and ds.vocab_size <= 300
    assert ds.manifest["options"]["normalization"] == "NFKC"
    assert [d["split"] for d in ds.documents()][-1] == "val"
    assert ds.manifest["sources"][0]["license"] == "unknown"
    # preparing again into the same dataset replaces it
    path2 = prepare([src], str(tmp_path / "out"), tokenizer="char", license="MIT")
    assert path2 == path and load_dataset(path).manifest["tokenizer"]["kind"] == "char"
    # --out naming a folder that is not a dataset is refused, never overwritten
    with pytest.raises(UsageError, match="not a gencraft dataset"):
        prepare([src], str(tmp_path / "c"), license="MIT")
    assert (tmp_path / "c" / "doc00.txt").is_file()


def test_prepare_tang300_cli(cli, shared_data: Path, gencraft_home: Path) -> None:
    r = cli("data", "prepare", shared_data / "tang300.json", "--field", "paragraphs", "--out", "tang",
            "--license", "public-domain")
    assert r.code == 0, r.err
    assert "dataset written to" in r.out and "near_dedupe" in r.out
    ds = load_dataset("tang")
    m = ds.manifest
    assert m["sources"][0]["license"] == "public-domain" and m["sources"][0]["encoding"] == "utf-8"
    steps = {s["step"]: s for s in m["steps"]}
    assert steps["read"]["documents"] == len(json.loads((shared_data / "tang300.json").read_text("utf-8")))
    assert steps["near_dedupe"]["removed"] >= 1  # variant transcriptions of the same poems
    first = next(ds.documents())["text"]
    assert "\n" in first and "，" in first  # a poem's lines joined with newlines
    assert ds.tokenizer.kind == "char" and ds.vocab_size > 2000
    val = ds.val_ids()
    assert ds.tokenizer.decode(val[: int(np.argmax(val == 0))].tolist()) == next(ds.documents("val"))["text"]


def test_license_per_path_cli(cli, tmp_path: Path) -> None:
    a = write_corpus(tmp_path / "a", 3)
    b = write_corpus(tmp_path / "b", 2)
    (b / "doc00.txt").write_text("another text in b, quite different from a's\n", encoding="utf-8")
    (b / "doc01.txt").write_text("and a second one, also of b, with its own words\n", encoding="utf-8")
    r = cli("data", "prepare", a, b, "--out", "lic", "--license", f"{b}=CC-BY-4.0", "--license", "MIT", "-q")
    assert r.code == 0, r.err
    assert "license unknown" not in r.err
    lic = {Path(s["path"]).parent.name: s["license"] for s in load_dataset("lic").sources()}
    assert lic == {"a": "MIT", "b": "CC-BY-4.0"}
    r = cli("data", "prepare", a, "--out", "lic2", "--license", "=MIT")
    assert r.code == 2 and "--license '=MIT'" in r.err


def test_prepare_tinyshakespeare_slice_cli(cli, shared_data: Path, tmp_path: Path) -> None:
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    src = tmp_path / "shakespeare.txt"
    src.write_text(text[:100_000], encoding="utf-8")  # > 64 KB: split into paragraphs
    r = cli("data", "prepare", src, "--out", "shk", "--tokenizer", "bpe", "--vocab-size", "1000",
            "--split", "tail", "--license", "public-domain", "-q")
    assert r.code == 0, r.err
    ds = load_dataset("shk")
    s = ds.manifest["splits"]
    assert s["train"]["documents"] > 500 and s["val"]["documents"] > 50
    assert 0.08 < s["val"]["chars"] / (s["val"]["chars"] + s["train"]["chars"]) < 0.13
    assert ds.vocab_size == 1000 and s["train"]["tokens"] < s["train"]["chars"] / 2
    last = list(ds.documents())[-1]["text"]
    assert text[:100_000].rstrip().endswith(last)


def test_single_document_tail_split_like_nanogpt(shared_data: Path) -> None:
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    with pytest.warns(UserWarning, match="license"):
        path = prepare([shared_data / "tinyshakespeare.txt"], "whole", unit="file", split="tail", dedupe=False)
    ds = load_dataset(path)
    cleaned = normalize_whitespace(remove_control(normalize_unicode(text, "NFC")))
    s = ds.manifest["splits"]
    assert s["train"]["chars"] == round(len(cleaned) * 0.9) and s["val"]["chars"] == len(cleaned) - s["train"]["chars"]
    assert s["train"]["tokens"] == s["train"]["chars"] + 1  # one char per token, then end-of-text
    val = next(ds.documents("val"))["text"]
    assert cleaned.endswith(val) and ds.tokenizer.decode(ds.val_ids()[:-1].tolist()) == val


def test_single_document_hash_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("just one short document\n", encoding="utf-8")
    with pytest.raises(DataError, match="one.txt: only one document"):
        prepare([tmp_path / "one.txt"], "one", license="MIT")
    assert prepare([tmp_path / "one.txt"], "one", license="MIT", val_fraction=0).is_dir()


# ---------------------------------------------------------------- bad input through the CLI


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "img.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    (tmp / "empty.txt").write_text("  \n\n\t\n", encoding="utf-8")
    (tmp / "latin1.txt").write_bytes("Crème brûlée à la carte, señor.\n".encode("latin-1"))
    (tmp / "poems.json").write_text(json.dumps([{"paragraphs": ["a"]}, {"title": "b"}]), encoding="utf-8")
    (tmp / "table.csv").write_text("id,body\n1,hello\n", encoding="utf-8")
    (tmp / "nothing").mkdir()
    (tmp / "nothing" / "picture.png").write_bytes(b"\x89PNG")
    ok = write_corpus(tmp / "ok", 4)
    return {
        "binary": (["img.txt"], "img.txt: looks like a binary file"),
        "empty corpus": (["empty.txt"], "empty.txt: empty corpus"),
        "undecodable": (["latin1.txt"], "latin1.txt: undecodable bytes"),
        "json field": (["poems.json", "--field", "paragraphs"], "poems.json: record 2 has no field 'paragraphs'"),
        "csv column": (["table.csv", "--column", "text"], "table.csv: no column 'text'"),
        "no readable files": (["nothing"], "nothing: folder has no readable files"),
        "missing source": (["nowhere.txt"], "nowhere.txt: source not found"),
        "bad option": ([str(ok), "--val-fraction", "1.5"], "--val-fraction 1.5 must be in [0, 1)"),
        "bad tokenizer": ([str(ok), "--tokenizer", "word"], "--tokenizer 'word' must be one of char, bpe"),
        "bad split": ([str(ok), "--split", "random"], "--split 'random'"),
        "bad threshold": ([str(ok), "--near-dup-threshold", "0"], "--near-dup-threshold 0.0"),
        "bad max chars": ([str(ok), "--min-chars", "10", "--max-chars", "5"], "--max-chars 5"),
    }


@pytest.mark.parametrize("case", ["binary", "empty corpus", "undecodable", "json field", "csv column",
                                  "no readable files", "missing source", "bad option", "bad tokenizer",
                                  "bad split", "bad threshold", "bad max chars"])
def test_bad_input_cli(cli, tmp_path: Path, gencraft_home: Path, case: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args, message = _bad_inputs(tmp_path)[case]
    r = cli("data", "prepare", *args, "--out", "broken", "--license", "MIT")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert message in lines[0]
    assert "Traceback" not in r.err + r.out
    assert datasets_left(gencraft_home) == []  # nothing half-written, no temp folder either


def test_bad_input_keeps_previous_dataset(cli, tmp_path: Path, gencraft_home: Path) -> None:
    ok = write_corpus(tmp_path / "ok", 4)
    assert cli("data", "prepare", ok, "--out", "keep", "--license", "MIT", "-q").code == 0
    before = (gencraft_home / "datasets/keep/manifest.json").read_bytes()
    (tmp_path / "img.txt").write_bytes(b"\x00\x01\x02")
    r = cli("data", "prepare", ok, tmp_path / "img.txt", "--out", "keep", "--license", "MIT")
    assert r.code == 2 and "img.txt" in r.err
    assert (gencraft_home / "datasets/keep/manifest.json").read_bytes() == before
    assert datasets_left(gencraft_home) == ["keep"]


def test_join_with_eos_and_uint32() -> None:
    from gencraft.data.prepare import _join_with_eos

    arr = _join_with_eos([[70_000, 1], [], [5]], eos_id=0, dtype="uint32")
    assert arr.dtype == np.dtype("<u4") and arr.tolist() == [70_000, 1, 0, 0, 5, 0]
    assert _join_with_eos([], 0, "uint16").size == 0


def test_load_dataset_errors(tmp_path: Path, gencraft_home: Path) -> None:
    from gencraft.errors import NotFoundError

    with pytest.raises(NotFoundError, match="'nope' not found"):
        load_dataset("nope")
    bad = gencraft_home / "datasets" / "bad"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        load_dataset("bad")
    (bad / "manifest.json").write_text(json.dumps({"kind": "images"}), encoding="utf-8")
    with pytest.raises(DataError, match="an image dataset"):
        load_dataset("bad")
