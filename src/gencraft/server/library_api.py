"""Library routes: list/search, get, delete, rate, and an item's content.

A listing carries each item's metadata, never its bytes: an item with binary content (a PNG, a WAV, a
MIDI file) has its size (``content_bytes``) and ``content_url``, ``GET /v1/gencraft/library/ID/content``,
which serves the bytes with the item's media type -- fetched when they are shown, one at a time."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gencraft.errors import NotFoundError
from gencraft.library import Filters, item_dict

router = APIRouter(prefix="/v1/gencraft/library", tags=["library"])

ItemId = Annotated[int, Path(ge=1, le=2**62, description="The item's id.")]


class Rating(BaseModel):
    rating: Literal[-1, 0, 1] = Field(description="1 thumbs up, -1 thumbs down, 0 clear.")
    note: str | None = Field(None, max_length=4000)


@router.get("", summary="List and search the library")
async def list_items(
    request: Request,
    q: str | None = Query(None, max_length=500, description="Text to find in the prompt or the output."),
    kind: str | None = Query(None, max_length=32, description="completion, chat, image, write, game, ads."),
    model: str | None = Query(None, max_length=512),
    since: datetime | None = Query(None, description="ISO date/time (inclusive)."),
    until: datetime | None = Query(None, description="ISO date/time (inclusive)."),
    rating: Literal[-1, 0, 1] | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> dict[str, Any]:
    """Newest first; metadata only: an item's bytes are at its ``content_url`` (null: a text item)."""
    lib = request.app.state.gc.library
    f = Filters(text=q, kind=kind, model=model, since=since, until=until, rating=rating)
    rows, total = await asyncio.to_thread(lib.search, f, limit=limit, offset=offset, content=False)
    return {"object": "list", "total": total, "data": [_listed(item_dict(r, with_image=False)) for r in rows]}


def _listed(d: dict[str, Any]) -> dict[str, Any]:
    d["content_url"] = f"{router.prefix}/{d['id']}/content" if d["content_bytes"] is not None else None
    return d


@router.get("/{item_id}", summary="One library item (with its content as base64, image_b64)")
async def get_item(item_id: ItemId, request: Request) -> dict[str, Any]:
    lib = request.app.state.gc.library
    return _listed(item_dict(await asyncio.to_thread(lib.get, item_id)))


@router.get("/{item_id}/content", summary="An item's content (PNG, WAV, MIDI...) in its media type",
            response_class=Response)
async def get_content(item_id: ItemId, request: Request) -> Response:
    item = await asyncio.to_thread(request.app.state.gc.library.get, item_id)
    if item.image is None:
        raise NotFoundError(f"library item {item_id} is a {item.kind} item without binary content (its text is "
                            "in the item)", param="id")
    return Response(item.image, media_type=item.media_type or "application/octet-stream")


@router.get("/{item_id}/image", summary="An image item as PNG", response_class=Response)
async def get_image(item_id: ItemId, request: Request) -> Response:
    item = await asyncio.to_thread(request.app.state.gc.library.get, item_id)
    if item.image is None:
        raise NotFoundError(f"library item {item_id} is a {item.kind} item without an image", param="id")
    return Response(item.image, media_type="image/png")


@router.delete("/{item_id}", summary="Delete a library item")
async def delete_item(item_id: ItemId, request: Request) -> dict[str, Any]:
    await asyncio.to_thread(request.app.state.gc.library.delete, item_id)
    return {"id": item_id, "object": "library.item", "deleted": True}


@router.post("/{item_id}/rating", summary="Rate an item (thumbs up/down and a note)")
async def rate_item(item_id: ItemId, body: Rating, request: Request) -> dict[str, Any]:
    item = await asyncio.to_thread(request.app.state.gc.library.rate, item_id, body.rating, body.note)
    return {"id": item.id, "rating": item.rating, "note": item.note}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
