"""The content library: migrations, search, ratings, ranking toward liked items, crash safety (WAL)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from gencraft.errors import NotFoundError, UsageError  # noqa: E402
from gencraft.library import Filters, Library, item_dict  # noqa: E402


@pytest.fixture
def lib(gencraft_home: Path):
    lib = Library.open()
    yield lib
    lib.close()


def test_migrations_create_schema_in_wal_mode(lib: Library, gencraft_home: Path) -> None:
    db = gencraft_home / "library.db"
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"
        cols = {r[1] for r in con.execute("PRAGMA table_info(items)")}
    finally:
        con.close()
    assert {"prompt", "text", "image", "parameters", "manifest", "guard", "rating", "note", "model", "kind"} <= cols
    Library.open().close()  # opening again is a no-op upgrade


def test_add_get_search_delete(lib: Library) -> None:
    a = lib.add(kind="completion", model="tiny", prompt="Once upon", text="a Time in Paris",
                parameters={"temperature": 0.7}, manifest={"content_sha256": "x"}, guard={"action": "allow"})
    b = lib.add(kind="chat", model="other", prompt="hi", text="hello there")
    c = lib.add(kind="image", model="pixels", prompt="cat", image=b"\x89PNG fake")
    got = lib.get(a)
    assert (got.prompt, got.text, got.parameters, got.manifest["content_sha256"]) == (
        "Once upon", "a Time in Paris", {"temperature": 0.7}, "x")
    rows, total = lib.search(text="time in paris")  # case-insensitive, in text or prompt
    assert total == 1 and rows[0].id == a
    assert [r.id for r in lib.search(kind="chat")[0]] == [b]
    assert [r.id for r in lib.search(model="pixels")[0]] == [c]
    assert lib.search(text="upon")[0][0].id == a
    assert {r.id for r in lib.search(since=datetime.now(UTC) - timedelta(minutes=5))[0]} == {a, b, c}
    assert lib.search(until=datetime.now(UTC) - timedelta(days=1))[1] == 0
    assert [r.id for r in lib.search(limit=2)[0]] == [c, b]  # newest first
    d = item_dict(lib.get(c))
    assert d["media_type"] == "image/png" and d["image_b64"]
    lib.delete(b)
    with pytest.raises(NotFoundError):
        lib.get(b)
    with pytest.raises(NotFoundError):
        lib.delete(b)


def test_ratings_and_rank_toward_liked(lib: Library) -> None:
    up = lib.add(kind="ads", text="Fresh lemon soda, zesty and bright")
    down = lib.add(kind="ads", text="Premium leather boots for winter hikes")
    lib.add(kind="ads", text="unrated filler")
    lib.rate(up, 1, note="love the zest")
    lib.rate(down, -1)
    assert lib.get(up).note == "love the zest" and lib.get(down).rating == -1
    assert lib.search(Filters(rating=1))[0][0].id == up
    with pytest.raises(UsageError) as e:
        lib.rate(up, 5)
    assert e.value.param == "rating"
    from gencraft.apps.ads import Variant, toward_liked

    variants = [Variant("search", "Sturdy boots", "of leather", "Shop"),
                Variant("search", "Zesty lemon", "drink, bright", "Buy")]
    ranked = toward_liked(variants, lib)
    assert ranked[0].headline == "Zesty lemon" and ranked[0].scores["preference"] > 0 > ranked[1].scores["preference"]
    lib.rate(up, 0)
    lib.rate(down, 0)  # nothing rated: the kit's order, no preference score
    fresh = [Variant("search", "b", "x", "y"), Variant("search", "a", "x", "y")]
    assert toward_liked(fresh, lib) == fresh and all("preference" not in v.scores for v in fresh)


def test_bad_database_url_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as e:
        Library.open("nosuchdb://x")
    assert e.value.param == "db"


WRITER = textwrap.dedent("""
    import sys
    from gencraft.library import Library
    lib = Library.open(sys.argv[1])
    i = 0
    while True:
        item = lib.add(kind="completion", model="m", prompt=f"p{i}", text="x" * 2000 + str(i),
                       parameters={"i": i})
        print(item, flush=True)  # printed only after the commit returned
        i += 1
""")


def test_kill_9_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    Library.open(url).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, GENCRAFT_HOME=str(tmp_path)))
    committed: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(committed) < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is inside its next transaction
        proc.wait(timeout=30)
        rest = proc.stdout.read().split()  # printed (so committed) while we stopped reading
        proc.stdout.close()
    committed += [int(x) for x in rest if x.isdigit()]
    assert len(committed) >= 40, "the writer did not get going"
    lib = Library.open(url)
    try:
        stored = set(lib.ids())
        assert set(committed) <= stored  # every committed row survived
        assert len(stored) <= len(committed) + 1  # plus at most the one being written when killed
        last = lib.get(committed[-1])
        assert last.parameters == {"i": len(committed) - 1} and last.text.endswith(str(len(committed) - 1))
    finally:
        lib.close()
