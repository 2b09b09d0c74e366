"""The content library: every generation with its prompt, parameters, model, manifest and guard results.

SQLite under ``GENCRAFT_HOME/library.db`` by default (WAL journal: a writer killed mid-write loses
nothing it committed), or any SQLAlchemy URL (``postgresql://...``). The schema comes from the
Alembic migrations shipped in this package, applied when the library is opened::

    lib = Library.open()                       # or Library.open("postgresql://user@host/db")
    item_id = lib.add(kind="completion", model="shakespeare", prompt="ROMEO:", text="...")
    lib.search(text="romeo", kind="completion")
    lib.rate(item_id, +1, note="good rhythm")
    preference_scores(["variant a", "variant b"], *lib.rated_texts("ads"))  # the ad kit ranks by it
"""

from __future__ import annotations

import base64
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, or_, select, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, defer, sessionmaker

from gencraft.errors import DataError, NotFoundError, UsageError
from gencraft.library.models import Base, Item
from gencraft.paths import home
from gencraft.schemas import LibraryRow, validate_data

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x67656E63  # PostgreSQL advisory lock key held while migrating ("genc")
KINDS = ("completion", "chat", "image", "write", "game", "ads")


def default_url() -> str:
    """``sqlite:///GENCRAFT_HOME/library.db``."""
    return f"sqlite:///{home() / 'library.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; a kill -9 keeps every commit
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
    # SQLite's own lower() folds ASCII only; text search must find "ÉTÉ" by "été" as PostgreSQL does.
    dbapi_conn.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# Column width limits the schema enforces on PostgreSQL (SQLite ignores them): checked before a write so
# that an over-long value is a UsageError naming the field on every database, not a driver error.
FIELD_LIMITS = {"kind": 32, "model": 512, "api_key": 64}
MAX_ID = 2**31 - 1  # ids are INTEGER (int4 on PostgreSQL): a larger one cannot exist, and must not reach the driver


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode and a busy timeout on every connection.

    ``postgresql://`` (or ``postgres://``) URLs use psycopg 3 when it is installed.
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            if not _has("psycopg"):
                raise UsageError(f"--db {_safe_url(url)}: PostgreSQL needs the psycopg driver; "
                                 "install it with: pip install 'gencraft[postgres]'", param="db")
            url = "postgresql+psycopg://" + url[len(scheme):]
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                owner_only(Path(path))
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as e:
        raise UsageError(f"--db {_safe_url(url)}: not a usable database URL ({str(e).splitlines()[0]}); "
                         "use sqlite:///PATH or postgresql://USER@HOST/DB (with a driver installed)",
                         param="db") from None


def owner_only(db: Path) -> None:
    """Create the SQLite file readable by its owner only, like the keys: it holds every prompt and
    output. (SQLite gives its -wal and -shm files the database file's permissions.) An existing file
    is never opened here: closing any descriptor of a file drops every POSIX lock this process holds
    on it, SQLite's own included, and another connection's writes could then corrupt it."""
    try:
        os.close(os.open(db, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError:  # a read-only location: SQLite reports it when it opens the file
        return
    try:
        os.chmod(db, 0o600)  # a library made before this: owner-only from now on
    except OSError:
        pass


@contextmanager
def _readable() -> Iterator[None]:
    """A JSON column the database hands back unreadable (edited by hand) is a DataError, not a crash."""
    try:
        yield
    except ValueError as e:  # json.JSONDecodeError from the JSON columns' result processing
        raise DataError(f"the library database holds an item whose JSON cannot be read ({e}); find it with "
                        "`gencraft library list` and delete it, or restore the database") from None


def _safe_url(url: str) -> str:
    """``url`` with any password starred (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return repr(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we could find either
        return repr(url)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def migrate(engine: Engine) -> None:
    """Apply the packaged Alembic migrations up to ``head``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Servers and CLI runs starting together: one migrates, the others wait and then find
                # the schema at head (without the lock both would CREATE TABLE and one would fail).
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except DBAPIError as e:  # unreachable server, missing database, a file that is not a database...
        raise UsageError(f"library database {_safe_url(str(engine.url))}: cannot open or migrate it "
                         f"({str(e.orig).splitlines()[0]})", param="db") from None


@dataclass
class Filters:
    """Search filters; every field is optional."""

    text: str | None = None
    kind: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    rating: int | None = None


def item_dict(item: Item, *, with_image: bool = True) -> dict[str, Any]:
    """An item as JSON-able data: its binary content (a PNG, WAV, MIDI...) as base64 (``image_b64``),
    or with ``with_image=False`` only its size (a listing: :meth:`Library.search` with ``content=False``
    does not read the bytes). ``content_bytes``: the size, None for an item without binary content."""
    d = {
        "id": item.id, "created": _iso(item.created), "kind": item.kind, "model": item.model,
        "prompt": item.prompt, "text": item.text, "media_type": item.media_type,
        "parameters": item.parameters or {}, "manifest": item.manifest, "guard": item.guard,
        "rating": item.rating, "note": item.note,
    }
    # a row edited by hand or by another program: one line naming the item and the field
    validate_data(d, LibraryRow, f"library item {item.id}", DataError)
    state = vars(item)  # what was read: a listing's rows hold the size, not the (deferred) bytes
    data = state.get("image")
    d["content_bytes"] = state.get(CONTENT_BYTES, len(data) if data is not None else None)
    if with_image and data is not None:
        d["image_b64"] = base64.b64encode(data).decode("ascii")
    return d


CONTENT_BYTES = "content_bytes"  # set on the items of search(content=False): the size of the bytes not read


def _iso(dt: datetime) -> str:
    return _utc(dt).isoformat()


def _utc(dt: datetime) -> datetime:
    """An aware UTC datetime: naive ones are taken as UTC (what the library stores), aware ones converted.

    SQLite keeps the UTC wall time without an offset; PostgreSQL returns ``timestamptz`` in the
    session's time zone and reads a naive parameter in that zone -- so filters and output are both
    made UTC here, and every database answers the same.
    """
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it: the ends of time
        return datetime.min.replace(tzinfo=UTC) if dt.year == 1 else datetime.max.replace(tzinfo=UTC)


def _valid_id(item_id: int) -> bool:
    return isinstance(item_id, int) and 1 <= item_id <= MAX_ID


def _clean(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters: they are stored as U+FFFD on every database."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


class Library:
    """A handle on the library database (thread-safe: one short session per call)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None) -> Library:
        """Open (and migrate) the library at ``url`` (default: SQLite under GENCRAFT_HOME)."""
        engine = make_engine(url or os.environ.get("GENCRAFT_DB") or default_url())
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._session()

    def add(self, *, kind: str, model: str = "", prompt: str = "", text: str | None = None,
            image: bytes | None = None, parameters: dict[str, Any] | None = None,
            manifest: dict[str, Any] | None = None, guard: dict[str, Any] | None = None,
            api_key: str | None = None, media_type: str | None = None) -> int:
        """Store one item (committed before returning); returns its id. ``image`` holds the bytes of
        any binary output (PNG, MIDI, WAV), ``media_type`` says which (default: PNG or plain text)."""
        for name, value in (("kind", kind), ("model", model), ("api_key", api_key)):
            if value is not None and len(value) > FIELD_LIMITS[name]:
                raise UsageError(f"library item {name}: {len(value)} characters, at most {FIELD_LIMITS[name]}",
                                 param=name)
        if not kind:
            raise UsageError("library item kind: must not be empty", param="kind")
        kind, model, prompt, text = _clean(kind), _clean(model), _clean(prompt), _clean(text)
        item = Item(created=datetime.now(UTC), kind=kind, model=model, prompt=prompt, text=text, image=image,
                    media_type=media_type or ("image/png" if image is not None else "text/plain"),
                    parameters=parameters or {}, manifest=manifest, guard=guard, rating=0, note="",
                    api_key=api_key)
        with self.session() as s, s.begin():
            s.add(item)
        return item.id

    def get(self, item_id: int) -> Item:
        """One item; NotFoundError when there is none with that id."""
        with self.session() as s, _readable():
            item = s.get(Item, item_id) if _valid_id(item_id) else None
        if item is None:
            raise NotFoundError(f"library item {item_id} not found; list items with GET /v1/gencraft/library",
                                param="id")
        return item

    def delete(self, item_id: int) -> None:
        with self.session() as s, s.begin():
            item = s.get(Item, item_id) if _valid_id(item_id) else None
            if item is None:
                raise NotFoundError(f"library item {item_id} not found", param="id")
            s.delete(item)

    def rate(self, item_id: int, rating: int, note: str | None = None) -> Item:
        """Thumbs up (+1), down (-1) or clear (0), with an optional note."""
        if rating not in (-1, 0, 1):
            raise UsageError(f"rating={rating!r}: use 1 (thumbs up), -1 (thumbs down) or 0 (clear)",
                             param="rating")
        with self.session() as s, s.begin():
            item = s.get(Item, item_id) if _valid_id(item_id) else None
            if item is None:
                raise NotFoundError(f"library item {item_id} not found", param="id")
            item.rating = rating
            if note is not None:
                item.note = _clean(note)
        return item

    def search(self, filters: Filters | None = None, *, limit: int = 50, offset: int = 0, content: bool = True,
               **kw: Any) -> tuple[list[Item], int]:
        """Items matching ``filters`` (newest first) and how many match in all. ``content=False``: the
        binary content is not read (a listing), only its size (:func:`item_dict`'s ``content_bytes``);
        reading ``item.image`` of such a row is an error."""
        f = filters or Filters(**kw)
        if f.kind is not None and not f.kind:
            f.kind = None
        q = select(Item)
        if f.text:
            # a substring, case-insensitive; % _ and \\ in it are matched literally (autoescape), the
            # same on SQLite and PostgreSQL (where a bare backslash would otherwise escape).
            needle = _clean(f.text).lower()
            q = q.where(or_(func.lower(Item.text).contains(needle, autoescape=True),
                            func.lower(Item.prompt).contains(needle, autoescape=True)))
        if f.kind:
            q = q.where(Item.kind == _clean(f.kind))
        if f.model:
            q = q.where(Item.model == _clean(f.model))
        if f.since:
            q = q.where(Item.created >= _utc(f.since))
        if f.until:
            q = q.where(Item.created <= _utc(f.until))
        if f.rating is not None:
            q = q.where(Item.rating == f.rating)
        with self.session() as s, _readable():
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            page = q.order_by(Item.id.desc()).limit(limit).offset(offset)
            if content:
                rows = list(s.scalars(page))
            else:
                rows = []
                for item, size in s.execute(page.add_columns(func.length(Item.image))
                                            .options(defer(Item.image, raiseload=True))):
                    setattr(item, CONTENT_BYTES, size)
                    rows.append(item)
        return rows, int(total)

    def count(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count(Item.id))) or 0)

    def ids(self) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Item.id).order_by(Item.id)))

    def rated_texts(self, kind: str | None = None, limit: int = 200) -> tuple[list[str], list[str]]:
        """Texts rated up and down (newest first), optionally of one kind."""
        q = select(Item.text, Item.rating).where(Item.rating != 0, Item.text.is_not(None))
        if kind:
            q = q.where(Item.kind == kind)
        with self.session() as s:
            rows = s.execute(q.order_by(Item.id.desc()).limit(limit)).all()
        return [t for t, r in rows if r > 0], [t for t, r in rows if r < 0]


# ---------------------------------------------------------------- ranking toward what was liked

def _grams(s: str) -> Counter[str]:
    s = " ".join(s.lower().split())
    return Counter(s[i:i + 3] for i in range(max(1, len(s) - 2)))


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def preference_scores(candidates: Sequence[str], liked: Sequence[str], disliked: Sequence[str]) -> list[float]:
    """How much each candidate resembles liked items more than disliked ones (character-trigram
    cosine: mean similarity to the liked minus mean similarity to the disliked)."""
    lg, dg = [_grams(t) for t in liked], [_grams(t) for t in disliked]
    out = []
    for c in candidates:
        g = _grams(c)
        up = sum(_cosine(g, x) for x in lg) / len(lg) if lg else 0.0
        down = sum(_cosine(g, x) for x in dg) / len(dg) if dg else 0.0
        out.append(up - down)
    return out


def record(**fields: Any) -> int:
    """Store one item in the default library (for kits and the CLI); returns its id."""
    lib = Library.open()
    try:
        return lib.add(**fields)
    finally:
        lib.close()


__all__ = ["Base", "Filters", "Item", "KINDS", "Library", "default_url", "item_dict", "make_engine", "migrate",
           "preference_scores", "record"]
