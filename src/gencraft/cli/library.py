"""`gencraft library list|search|show|rate|delete`: the content library from the command line.

Every generating command keeps its outputs in the library through the release step
(:func:`gencraft.guard.release`, ``--no-store`` to skip); storing never breaks the command that
generated: a library that cannot be opened or written gives one warning line on stderr and the
output is still written where it was asked for.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import typer

from gencraft.errors import UsageError
from gencraft.io import write_bytes
from gencraft.library import KINDS, Filters, Library, item_dict

DB_HELP = "Library database URL (default: $GENCRAFT_DB, else SQLite under GENCRAFT_HOME)."
NO_STORE_HELP = "Don't keep the outputs in the content library (`gencraft library list`)."


# ---------------------------------------------------------------- what the generating commands call


def say_stored(released: list) -> None:
    """One stderr line naming the library ids of what a command released (when it stored them)."""
    ids = [r.item_id for r in released if r.item_id is not None]
    if ids:
        typer.echo(f"stored in the library as #{ids[0]}" if len(ids) == 1 else
                   f"stored in the library as #{ids[0]}..#{ids[-1]}", err=True)


# ---------------------------------------------------------------- the command group


def _open(db: str | None):
    return Library.open(db)


def _date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--{name} {value!r}: not an ISO date or date-time (e.g. 2026-11-29 or "
                         "2026-11-29T09:30:00+00:00)", param=name) from None


RATINGS = {"up": 1, "down": -1, "none": 0, "clear": 0, "1": 1, "-1": -1, "0": 0}


def _rating(value: str | None, name: str = "rating") -> int | None:
    if value is None:
        return None
    if value not in RATINGS:
        raise UsageError(f"--{name} {value!r}: use up, down or none", param=name)
    return RATINGS[value]


def _one_line(s: str | None, width: int) -> str:
    s = " ".join((s or "").split())
    return s if len(s) <= width else s[:width - 1] + "…"


def _listing(text: str | None, kind: str | None, model: str | None, since: str | None, until: str | None,
             rating: str | None, limit: int, offset: int, as_json: bool, db: str | None) -> None:
    if limit < 1 or limit > 10_000:
        raise UsageError(f"--limit {limit}: use 1..10000", param="limit")
    if offset < 0:
        raise UsageError(f"--offset {offset}: must be >= 0", param="offset")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: use one of {', '.join(KINDS)}", param="kind")
    f = Filters(text=text, kind=kind, model=model, since=_date(since, "since"), until=_date(until, "until"),
                rating=_rating(rating))
    lib = _open(db)
    try:
        rows, total = lib.search(f, limit=limit, offset=offset, content=False)
    finally:
        lib.close()
    if as_json:
        data = [item_dict(r, with_image=False) for r in rows]
        sys.stdout.write(json.dumps({"total": total, "data": data}, ensure_ascii=False, indent=2) + "\n")
        return
    thumbs = {1: "+1", -1: "-1", 0: ""}
    for r in rows:
        d = item_dict(r, with_image=False)
        body = r.text if r.text is not None else f"[{r.media_type}, {d['content_bytes'] or 0} bytes]"
        sys.stdout.write(f"#{r.id}\t{d['created'][:19]}\t{r.kind}\t{_one_line(r.model, 24) or '-'}\t"
                         f"{thumbs.get(r.rating, '')}\t{_one_line(body, 70)}\n")
    typer.echo(f"{len(rows)} shown of {total} matching" + (f" (from #{offset + 1})" if offset else ""), err=True)


def register(app: typer.Typer) -> None:
    g = typer.Typer(help="The content library: every generation with its prompt, parameters, manifest and "
                         "guard results. List, search, show, rate, delete.", no_args_is_help=True)

    filters = {
        "kind": typer.Option(None, "--kind", help="completion, chat, image, write, game or ads."),
        "model": typer.Option(None, "--model", help="Only this model (run name or hf:PATH)."),
        "since": typer.Option(None, "--since", help="From this ISO date/time (UTC unless an offset is given)."),
        "until": typer.Option(None, "--until", help="Up to this ISO date/time."),
        "rating": typer.Option(None, "--rating", help="up, down or none."),
        "limit": typer.Option(20, "--limit", "-n", help="Most items shown (newest first)."),
        "offset": typer.Option(0, "--offset", help="Skip this many matches first."),
        "json": typer.Option(False, "--json", help="Print JSON (without image bytes)."),
        "db": typer.Option(None, "--db", help=DB_HELP),
    }

    @g.command("list")
    def list_cmd(
        kind: str = filters["kind"], model: str = filters["model"], since: str = filters["since"],
        until: str = filters["until"], rating: str = filters["rating"], limit: int = filters["limit"],
        offset: int = filters["offset"], as_json: bool = filters["json"], db: str = filters["db"],
    ) -> None:
        """Items, newest first: id, time (UTC), kind, model, rating and the start of the text."""
        _listing(None, kind, model, since, until, rating, limit, offset, as_json, db)

    @g.command("search")
    def search_cmd(
        text: str = typer.Argument(..., help="Text to find in the prompt or the output (any case)."),
        kind: str = filters["kind"], model: str = filters["model"], since: str = filters["since"],
        until: str = filters["until"], rating: str = filters["rating"], limit: int = filters["limit"],
        offset: int = filters["offset"], as_json: bool = filters["json"], db: str = filters["db"],
    ) -> None:
        """Items whose prompt or text contains TEXT (plus any of the list filters)."""
        if not text.strip():
            raise UsageError("search text is empty; use `gencraft library list` to see everything", param="text")
        _listing(text, kind, model, since, until, rating, limit, offset, as_json, db)

    @g.command("show")
    def show_cmd(
        item_id: int = typer.Argument(..., metavar="ID", help="The item's id (from list or search)."),
        image: Path = typer.Option(None, "--image", help="Write an image item's PNG here."),
        db: str = typer.Option(None, "--db", help=DB_HELP),
    ) -> None:
        """One item as JSON: text, prompt, parameters, manifest, guard results and rating."""
        lib = _open(db)
        try:
            item = lib.get(item_id)
        finally:
            lib.close()
        if image is not None:
            if item.image is None:
                raise UsageError(f"--image: library item {item_id} is a {item.kind} item without an image",
                                 param="image")
            write_bytes(image, item.image)
            typer.echo(f"wrote {image}", err=True)
        sys.stdout.write(json.dumps(item_dict(item, with_image=False), ensure_ascii=False, indent=2) + "\n")

    @g.command("rate")
    def rate_cmd(
        item_id: int = typer.Argument(..., metavar="ID"),
        rating: str = typer.Argument(..., help="up, down or clear."),
        note: str = typer.Option(None, "--note", help="Why (kept with the rating)."),
        db: str = typer.Option(None, "--db", help=DB_HELP),
    ) -> None:
        """Thumbs up or down (and a note); the kits rank future variants toward what you liked."""
        value = _rating(rating)
        lib = _open(db)
        try:
            item = lib.rate(item_id, value, note)
        finally:
            lib.close()
        typer.echo(f"#{item.id}: rating {item.rating:+d}" + (f", note {item.note!r}" if item.note else ""))

    @g.command("delete")
    def delete_cmd(
        item_id: int = typer.Argument(..., metavar="ID"),
        db: str = typer.Option(None, "--db", help=DB_HELP),
    ) -> None:
        """Delete one item."""
        lib = _open(db)
        try:
            lib.delete(item_id)
        finally:
            lib.close()
        typer.echo(f"deleted #{item_id}")

    app.add_typer(g, name="library")


__all__ = ["register", "say_stored"]
