"""The content library on a real PostgreSQL server (and the same behaviour checks on SQLite).

A throwaway PostgreSQL cluster is made per module with the machine's ``initdb``/``pg_ctl`` in a
temporary folder, listens on a free loopback port, and is stopped (and removed) afterwards, also
when a test fails. The module skips only when the PostgreSQL server binaries are not installed.

The cluster runs in a far-from-UTC time zone (Pacific/Chatham, +12:45/+13:45) so that any mixing of
naive and aware datetimes between Python and the database shows up as wrong date filters.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest

from gencraft.errors import NotFoundError, UsageError
from gencraft.library import Library, item_dict
from gencraft.library.models import Item

PG_TIMEZONE = "Pacific/Chatham"


def _pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (PATH, /usr/local/bin, or Debian's versioned folder)."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += [Path("/usr/local/bin")]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists() and (d / "postgres").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_account() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root, but there is neither a 'postgres' nor a 'nobody' account to run PostgreSQL as")


class PgCluster:
    """initdb + pg_ctl start in a temporary folder; ``stop()`` shuts it down and removes the folder."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.account = _server_account()
        self.root = Path(tempfile.mkdtemp(prefix="gencraft-pg-"))  # /tmp: reachable by the server account
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.user = "gencraft"
        self.started = False
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)

    def _run(self, *args: str) -> None:
        kw = {}
        if self.account is not None:
            kw = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
        env.pop("PGDATA", None)
        r = subprocess.run(args, cwd=self.root, env=env, capture_output=True, text=True, timeout=60, **kw)
        if r.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}\n{log}")

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--no-instructions")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                f"-c full_page_writes=off -c timezone={PG_TIMEZONE} -c max_connections=60")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", opts, "start")
        self.started = True

    def stop(self) -> None:
        try:
            if self.started:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                               autocommit=True)

    def url(self, db: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


_db_counter = iter(range(1_000_000))


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database on the cluster (dropped afterwards)."""
    name = f"lib_{next(_db_counter)}"
    with pg_cluster.admin() as con:
        con.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    with pg_cluster.admin() as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same behaviour checks on both databases the library supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'library.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def lib(db_url: str) -> Iterator[Library]:
    lib = Library.open(db_url)
    yield lib
    lib.close()


# ---------------------------------------------------------------- PostgreSQL specifics


def test_migrations_apply_on_postgresql(pg_url: str) -> None:
    lib = Library.open(pg_url)
    lib.close()
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"
        cols = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'items'").fetchall())
        indexes = {r[0] for r in con.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'items'")}
    assert cols["created"] == "timestamp with time zone" and cols["image"] == "bytea"
    assert cols["parameters"] == "json" and cols["id"] == "integer"
    assert {"ix_items_created", "ix_items_kind", "ix_items_model", "ix_items_rating"} <= indexes
    Library.open(pg_url).close()  # at head already: a no-op


def test_concurrent_first_opens_migrate_once(pg_url: str) -> None:
    """Several processes/threads opening a fresh database at once: one migrates, none fails."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def opener() -> None:
        try:
            barrier.wait()
            Library.open(pg_url).close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


def test_unreachable_postgresql_is_a_usage_error(pg_cluster: PgCluster) -> None:
    url = f"postgresql://gencraft:s3cret@127.0.0.1:{_free_port()}/nowhere"
    with pytest.raises(UsageError) as e:
        Library.open(url)
    assert e.value.param == "db" and "s3cret" not in str(e.value) and "cannot open" in str(e.value)
    with pytest.raises(UsageError) as e:  # the server is up, the database is not there
        Library.open(pg_cluster.url("no_such_db"))
    assert e.value.param == "db" and "no_such_db" in str(e.value)


# ---------------------------------------------------------------- the same behaviour on both databases


def test_add_get_search_rate_delete(lib: Library) -> None:
    a = lib.add(kind="completion", model="tiny", prompt="Once upon", text="a Time in Paris",
                parameters={"temperature": 0.7, "stop": ["\n"]}, manifest={"content_sha256": "x"},
                guard={"action": "allow"})
    b = lib.add(kind="chat", model="other", prompt="hi", text="hello there")
    c = lib.add(kind="image", model="pixels", prompt="cat", image=b"\x89PNG\r\n\x1a\n\x00\xff")
    got = lib.get(a)
    assert (got.prompt, got.text, got.parameters, got.manifest, got.guard) == (
        "Once upon", "a Time in Paris", {"temperature": 0.7, "stop": ["\n"]}, {"content_sha256": "x"},
        {"action": "allow"})
    assert lib.get(c).image == b"\x89PNG\r\n\x1a\n\x00\xff"
    rows, total = lib.search(text="TIME IN paris")
    assert total == 1 and rows[0].id == a
    assert [r.id for r in lib.search(text="upon")[0]] == [a]  # the prompt is searched too
    assert [r.id for r in lib.search(kind="chat")[0]] == [b]
    assert [r.id for r in lib.search(model="pixels")[0]] == [c]
    assert [r.id for r in lib.search(limit=2)[0]] == [c, b]  # newest first
    assert [r.id for r in lib.search(limit=2, offset=2)[0]] == [a]
    lib.rate(a, 1, note="nice")
    lib.rate(b, -1)
    assert (lib.get(a).rating, lib.get(a).note, lib.get(b).rating) == (1, "nice", -1)
    assert [r.id for r in lib.search(rating=1)[0]] == [a]
    assert lib.rated_texts() == (["a Time in Paris"], ["hello there"])
    lib.rate(a, 0)
    assert lib.get(a).note == "nice"  # clearing the thumb keeps the note unless a new one is given
    lib.delete(b)
    with pytest.raises(NotFoundError):
        lib.get(b)
    with pytest.raises(NotFoundError):
        lib.rate(b, 1)
    with pytest.raises(NotFoundError):
        lib.get(2**62)  # the API's largest id: a clean 404, not a driver overflow
    assert lib.count() == 2 and lib.ids() == [a, c]


def test_dates_are_utc_whatever_the_server_time_zone(lib: Library) -> None:
    before = datetime.now(UTC)
    i = lib.add(kind="completion", text="dated")
    after = datetime.now(UTC)
    created = lib.get(i).created
    d = item_dict(lib.get(i))
    assert d["created"].endswith("+00:00")
    stamp = datetime.fromisoformat(d["created"])
    assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1), (created, d["created"])
    chatham = timezone(timedelta(hours=13, minutes=45))
    # the same instants written three ways: aware UTC, aware far from UTC, naive (taken as UTC)
    for since in (before - timedelta(seconds=1), (before - timedelta(seconds=1)).astimezone(chatham),
                  (before - timedelta(seconds=1)).replace(tzinfo=None)):
        assert [r.id for r in lib.search(since=since)[0]] == [i], since
    for until in (before - timedelta(minutes=10), (before - timedelta(minutes=10)).astimezone(chatham),
                  (before - timedelta(minutes=10)).replace(tzinfo=None)):
        assert lib.search(until=until)[1] == 0, until
    assert lib.search(since=before - timedelta(minutes=1), until=after + timedelta(minutes=1))[1] == 1
    assert lib.search(since=after + timedelta(minutes=1))[1] == 0
    east, west = timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))
    assert lib.search(since=datetime(1, 1, 1, tzinfo=east))[1] == 1  # before year 1 in UTC: no overflow
    assert lib.search(until=datetime(9999, 12, 31, 23, tzinfo=west))[1] == 1


def test_text_search_is_literal_and_unicode_aware(lib: Library) -> None:
    pct = lib.add(kind="ads", text="Save 50% today")
    lib.add(kind="ads", text="Save 500 today")
    under = lib.add(kind="write", text="snake_case names")
    lib.add(kind="write", text="snakeXcase names")
    slash = lib.add(kind="write", prompt=r"C:\temp\new", text="path")
    accents = lib.add(kind="write", text="ÉTÉ À PARIS, Straße")
    assert [r.id for r in lib.search(text="50%")[0]] == [pct]
    assert [r.id for r in lib.search(text="e_c")[0]] == [under]
    assert [r.id for r in lib.search(text=r"\temp\n")[0]] == [slash]
    assert [r.id for r in lib.search(text="été à paris")[0]] == [accents]
    assert lib.search(text="%")[1] == 1 and lib.search(text="_")[1] == 1


def test_nul_characters_and_field_limits(lib: Library) -> None:
    i = lib.add(kind="completion", model="m", prompt="a\x00b", text="x\x00y")
    got = lib.get(i)
    assert (got.prompt, got.text) == ("a\ufffdb", "x\ufffdy")  # PostgreSQL text cannot hold NUL
    assert lib.search(text="x\x00y")[1] == 1
    assert lib.search(model="m\x00")[1] == 0 and lib.search(kind="completion\x00")[1] == 0
    lib.rate(i, 1, note="n\x00")
    assert lib.get(i).note == "n\ufffd"
    with pytest.raises(UsageError) as e:
        lib.add(kind="completion", model="m" * 513)
    assert e.value.param == "model"
    with pytest.raises(UsageError) as e:
        lib.add(kind="k" * 33)
    assert e.value.param == "kind"
    with pytest.raises(UsageError) as e:
        lib.add(kind="")
    assert e.value.param == "kind"
    assert lib.count() == 1
    long_model = "hf:" + "/very/long/path" * 30  # under the limit: stored whole
    assert lib.get(lib.add(kind="chat", model=long_model)).model == long_model


def test_concurrent_writers_lose_nothing(db_url: str) -> None:
    lib = Library.open(db_url)
    try:
        per_thread, n_threads = 25, 6
        ids: list[list[int]] = [[] for _ in range(n_threads)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_threads)

        def writer(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    ids[t].append(lib.add(kind="completion", model=f"w{t}", prompt=f"p{t}-{i}",
                                          text=f"text {t} {i}", parameters={"t": t, "i": i}))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors
        flat = [i for part in ids for i in part]
        assert len(flat) == len(set(flat)) == per_thread * n_threads
        assert sorted(flat) == lib.ids() and lib.count() == per_thread * n_threads
        with lib.session() as s:
            rows = {(r.model, r.prompt, r.text, r.parameters["t"], r.parameters["i"]) for r in s.query(Item)}
        assert rows == {(f"w{t}", f"p{t}-{i}", f"text {t} {i}", t, i)
                        for t in range(n_threads) for i in range(per_thread)}
        for t in range(n_threads):
            assert lib.search(model=f"w{t}", limit=500)[1] == per_thread
    finally:
        lib.close()


# ---------------------------------------------------------------- the server on PostgreSQL


def test_server_stores_generations_in_postgresql(pg_url: str, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    openai = pytest.importorskip("openai")
    from test_server import LiveServer, make_text_run

    from gencraft.server import ServerConfig

    home = tmp_path / "studio"
    make_text_run(home, "tiny")
    with LiveServer(ServerConfig(auth=False, home=home, db=pg_url, rate_per_minute=0)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        r = client.completions.create(model="tiny", prompt="postgres check", max_tokens=5, temperature=0)
        chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "pg chat"}],
                                              max_tokens=4, temperature=0)
        listed = httpx.get(server.url + "/v1/gencraft/library",
                           params={"q": "postgres check", "kind": "completion"}).json()
        assert listed["total"] == 1
        item = listed["data"][0]
        assert item["text"] == r.choices[0].text and item["model"] == "tiny" and item["prompt"] == "postgres check"
        assert item["manifest"]["parameters"]["max_tokens"] == 5 and item["guard"]
        assert item["created"].endswith("+00:00")
        since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        assert httpx.get(server.url + "/v1/gencraft/library", params={"since": since}).json()["total"] == 2
        rated = httpx.post(f"{server.url}/v1/gencraft/library/{item['id']}/rating", json={"rating": 1, "note": "ok"})
        assert rated.status_code == 200 and rated.json()["rating"] == 1
        assert httpx.get(f"{server.url}/v1/gencraft/library/{item['id']}").json()["note"] == "ok"
        assert httpx.get(f"{server.url}/v1/gencraft/library/999999").status_code == 404
    # stored in PostgreSQL itself, not in a SQLite file under the studio's home
    assert not (home / "library.db").exists()
    lib = Library.open(pg_url)
    try:
        rows, total = lib.search(kind="chat")
        assert total == 1 and rows[0].text == chat.choices[0].message.content
        assert lib.get(item["id"]).rating == 1
    finally:
        lib.close()


def test_cli_kits_store_in_postgresql(pg_url: str, cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from test_server import make_text_run

    run = str(make_text_run(tmp_path, "tiny"))
    monkeypatch.setenv("GENCRAFT_DB", pg_url)  # what the kits store into
    r = cli("write", "continue", run, "--text", "the cat", "--tokens", "6", "--seed", "1")
    assert r.code == 0 and "stored in the library as #1" in r.err, r.err
    written = r.out.rstrip("\n")
    monkeypatch.delenv("GENCRAFT_DB")  # the library commands take --db
    r = cli("library", "search", "THE CAT", "--db", pg_url, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)["data"]
    assert len(data) == 1 and (data[0]["kind"], data[0]["text"]) == ("write", written)
    assert cli("library", "rate", str(data[0]["id"]), "down", "--db", pg_url).code == 0
    assert cli("library", "list", "--db", pg_url).code == 0
    lib = Library.open(pg_url)
    try:
        assert lib.get(data[0]["id"]).rating == -1
    finally:
        lib.close()
