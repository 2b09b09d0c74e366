"""Kit routes: the writing assistant, game records and ad variants, each stored in the library."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gencraft.apps import ads as A
from gencraft.apps import game as G
from gencraft.apps import write as W
from gencraft.errors import GencraftError, UsageError
from gencraft.server.errors import gencraft_error_body
from gencraft.server.openai_api import with_watermark

router = APIRouter(prefix="/v1/gencraft", tags=["kits"])


class WriteRequest(BaseModel):
    model: str
    mode: Literal["continue", "draft"] = "continue"
    text: str = Field("", max_length=200_000, description="The draft to continue (mode=continue).")
    memory: str = Field("", max_length=20_000, description="Always at the top of the context.")
    note: str = Field("", max_length=4000, description="Author's note, inserted note_depth lines from the end.")
    note_depth: int = Field(3, ge=0, le=100)
    tokens: int = Field(120, ge=1, le=4096)
    seed: int | None = Field(None, ge=0, le=2**62)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.1, gt=0, le=10)
    stream: bool = Field(False, description="mode=continue: stream the continuation as server-sent events.")
    title: str = Field("", max_length=500, description="mode=draft: the title or topic.")
    kind: str = Field("blog", max_length=32, description="mode=draft: blog, story, ...")
    sections: int = Field(3, ge=1, le=12)


class GameRequest(BaseModel):
    model: str
    n: int = Field(1, ge=1, le=16)
    seed: int | None = Field(None, ge=0, le=2**62)
    prompt: str | None = Field(None, max_length=4000)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    nodes: int = Field(4, ge=2, le=8)
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="Your own JSON Schema.")


class BriefModel(BaseModel):
    product: str = Field(min_length=1, max_length=200)
    features: list[str] = Field(default_factory=list, max_length=20)
    audience: str = Field("", max_length=500)
    tone: str = Field("", max_length=200)
    channel: str = Field("search", max_length=32)
    required: list[str] | None = Field(None, max_length=10)
    banned: list[str] | None = Field(None, max_length=50)
    voice_examples: list[str] = Field(default_factory=list, max_length=20)
    url: str = Field("", max_length=500)
    campaign: str = Field("", max_length=200)


class AdsRequest(BaseModel):
    model: str
    brief: BriefModel
    n: int = Field(3, ge=1, le=12)
    seed: int | None = Field(None, ge=0, le=2**62)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    rank_by_ratings: bool = Field(True, description="Re-rank toward ad variants rated up in the library.")


def _seed(seed: int | None) -> int:
    return seed if seed is not None else secrets.randbits(31)


def _key(request: Request) -> str | None:
    """The API key a request came with (stored with what it made)."""
    return getattr(request.state, "key_id", None)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


@router.post("/write", summary="Writing assistant: continue a draft (streamable) or draft a piece")
async def write(body: WriteRequest, request: Request) -> Any:
    gc = request.app.state.gc
    tm, sched = await gc.catalog.text(body.model)
    seed = _seed(body.seed)
    ctx = W.Context(memory=body.memory, note=body.note, note_depth=body.note_depth)
    params = body.model_dump(exclude={"text", "stream"}) | {"seed": seed}
    if body.mode == "draft":
        if not body.title.strip():
            raise UsageError("title: give the piece a title or topic (mode=draft)", param="title")
        wm = gc.policy.text_watermark(tm.tokenizer.vocab_size, temperature=body.temperature)
        written = await asyncio.to_thread(
            W.draft, tm, body.title, kind=body.kind, sections=body.sections, section_tokens=body.tokens, ctx=ctx,
            seed=seed, temperature=body.temperature, top_p=body.top_p, repetition_penalty=body.repetition_penalty,
            watermark=wm)
        return await _release_written(gc, request, body, written.text, written.parameters | params, body.title, wm)

    prompt = W.build_prompt(body.text, ctx)
    ids = tm.tokenizer.encode(prompt) or [tm.tokenizer.eos_id]
    if sched.limit is not None:  # keep the end of the draft: the model continues from there
        room = sched.limit - min(body.tokens, sched.limit // 2)
        ids = ids[-room:]
    tokens = body.tokens if sched.limit is None else min(body.tokens, sched.limit - len(ids))
    cfg, wm = with_watermark(tm.generation_config(
        max_new_tokens=tokens, temperature=body.temperature, top_p=body.top_p,
        repetition_penalty=body.repetition_penalty, seed=seed), tm, gc.policy)
    ticket = sched.submit(ids, cfg, timeout=gc.config.request_timeout)

    if not body.stream:
        r = (await ticket.results())[0]
        return await _release_written(gc, request, body, body.text + r.text, params, prompt, wm)

    async def events():
        parts = []
        try:
            async for ev in ticket.events():
                if ev.kind == "delta" and ev.text:
                    parts.append(ev.text)
                    yield _sse({"delta": ev.text})
            item = await _release_written(gc, request, body, body.text + "".join(parts), params, prompt, wm)
            yield _sse({"done": True, **item})
        except GencraftError as e:
            yield _sse(gencraft_error_body(e))
        finally:
            ticket.cancel()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _release_written(gc: Any, request: Request, body: WriteRequest, text: str, params: dict[str, Any],
                           prompt: str, watermark: Any) -> dict[str, Any]:
    tm, _ = await gc.catalog.text(body.model)
    rel = await gc.release(text, request=request, kind="text", label="write", model=tm, model_name=body.model,
                           params=params, seed=params.get("seed"), prompt=prompt, watermark=watermark)
    return {"id": rel.item_id, "text": rel.text, "manifest": rel.manifest, "guard": rel.report.to_dict()}


@router.post("/game/{kind}", summary="Game records (names, npc, quest, item, dialogue), schema-validated")
async def game(kind: str, body: GameRequest, request: Request) -> dict[str, Any]:
    gc = request.app.state.gc
    if kind not in G.KINDS and body.json_schema is None:
        raise UsageError(f"kind {kind!r} is not one of {', '.join(G.KINDS)} (or send your own schema)",
                         param="kind")
    tm, _ = await gc.catalog.text(body.model)
    seed = _seed(body.seed)
    wm = gc.policy.text_watermark(tm.tokenizer.vocab_size, temperature=body.temperature)
    records = await asyncio.to_thread(G.generate, tm, kind, n=body.n, seed=seed, schema=body.json_schema,
                                      prompt=body.prompt, temperature=body.temperature, top_p=body.top_p,
                                      nodes=body.nodes, watermark=wm)
    released = await asyncio.to_thread(
        G.release_records, records, policy=gc.policy, model=tm, model_name=body.model, schema=body.json_schema,
        prompt=body.prompt, parameters=body.model_dump(exclude={"json_schema", "prompt"}, exclude_none=True),
        watermark=wm, api_key=_key(request))
    out = [{"id": rel.item_id, "record": rec.value, "validation": rec.validation, "guard": rel.report.to_dict(),
            "manifest": rel.manifest, "logprob": rec.logprob} for rec, rel in zip(records, released, strict=True)]
    return {"object": "list", "kind": kind, "created": int(time.time()), "data": out}


@router.post("/ads", summary="Ad variants for a brief, checked against channel limits and terms")
async def ads(body: AdsRequest, request: Request) -> dict[str, Any]:
    gc = request.app.state.gc
    tm, _ = await gc.catalog.text(body.model)
    seed = _seed(body.seed)
    brief = A.Brief(**body.brief.model_dump(exclude_none=True))
    wm = gc.policy.text_watermark(tm.tokenizer.vocab_size, temperature=body.temperature)
    variants = await asyncio.to_thread(A.generate, tm, brief, n=body.n, seed=seed, temperature=body.temperature,
                                       top_p=body.top_p, rank_by_ratings=body.rank_by_ratings,
                                       library=gc.library if body.rank_by_ratings else None, watermark=wm)
    limits = A.channel_table()[brief.channel]
    released = await asyncio.to_thread(A.release_variants, variants, brief, policy=gc.policy, model=tm,
                                       model_name=body.model, parameters=body.model_dump(exclude_none=True),
                                       seed=seed, watermark=wm, api_key=_key(request))
    out = [{"id": rel.item_id, "variant": v.to_dict(), "preference": v.scores.get("preference", 0.0),
            "validation": A.validation(v, brief, limits), "guard": rel.report.to_dict(), "manifest": rel.manifest}
           for v, rel in zip(variants, released, strict=True)]
    return {"object": "list", "created": int(time.time()), "data": out}
