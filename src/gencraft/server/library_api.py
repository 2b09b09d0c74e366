"""Library routes: list/search, get, delete, rate, and an item's image."""

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
    """Newest first; images come as base64 PNG (``image_b64``)."""
    lib = request.app.state.gc.library
    f = Filters(text=q, kind=kind, model=model, since=since, until=until, rating=rating)
    rows, total = await asyncio.to_thread(lib.search, f, limit=limit, offset=offset)
    return {"object": "list", "total": total, "data": [item_dict(r) for r in rows]}


@router.get("/{item_id}", summary="One library item")
async def get_item(item_id: ItemId, request: Request) -> dict[str, Any]:
    lib = request.app.state.gc.library
    return item_dict(await asyncio.to_thread(lib.get, item_id))


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
