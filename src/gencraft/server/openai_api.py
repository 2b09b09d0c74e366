"""The OpenAI-compatible routes: models, completions, chat completions, images.

Fields follow OpenAI's API; the local-server extensions ``top_k``, ``min_p``, ``typical_p`` and
``repetition_penalty`` are accepted too. ``finish_reason`` is ``stop`` (a stop string or the
end-of-text token) or ``length`` (``max_tokens``, the context or the request timeout).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gencraft import guard
from gencraft.errors import GencraftError, UsageError
from gencraft.generate import constraints as C
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.image import label_index, sample_images
from gencraft.server.errors import gencraft_error_body
from gencraft.server.scheduler import check_prompt

router = APIRouter()

Stop = str | list[str] | None


class StreamOptions(BaseModel):
    include_usage: bool = False


class JSONSchemaSpec(BaseModel):
    name: str = "output"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JSONSchemaSpec | None = None


class Sampling(BaseModel):
    """Sampling fields shared by completions and chat."""

    model: str = Field(description="A model id from GET /v1/models.")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = Field(None, description="Up to 4 stop strings.")
    seed: int | None = Field(None, ge=0, le=2**62)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, description="Token id (as a string) -> bias in [-100, 100].")
    user: str | None = None
    top_k: int = Field(0, ge=0, le=100000, description="Extension: keep the k most likely tokens (0 = off).")
    min_p: float = Field(0.0, ge=0, lt=1, description="Extension: min-p filter (0 = off).")
    typical_p: float = Field(1.0, gt=0, le=1, description="Extension: locally typical sampling (1 = off).")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="Extension: CTRL repetition penalty (1 = off).")
    response_format: ResponseFormat | None = None
    allow_unseen_tokens: bool = Field(False, description="Extension: let the model sample tokens its training "
                                      "data never holds (byte-fallback pieces; biased away by default).")


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]] = Field("", description="Text, texts, or token ids.")
    max_tokens: int | None = Field(16, ge=0, le=1_000_000)
    logprobs: int | None = Field(None, ge=0, le=20, description="Return the top-N log-probabilities per token.")
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=16, description="Sample this many per prompt (at least n) and "
                                "return the n with the highest log-probability; not with stream.")


class ChatMessage(BaseModel):
    role: str = Field(description="system, user, assistant (or developer/tool).")
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=0, le=1_000_000)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class ImageRequest(BaseModel):
    model: str = Field(description="An image run (vae, dcgan, stylegan) from GET /v1/models.")
    prompt: str = Field("", description="A class label of a conditional run; otherwise ignored.")
    n: int = Field(1, ge=1, le=16)
    size: str | None = Field(None, description="WxH; the run's own size when omitted (images are resized).")
    response_format: Literal["b64_json"] = "b64_json"
    seed: int | None = Field(None, ge=0, le=2**62)
    truncation: float = Field(1.0, ge=0, le=2, description="Extension: latent truncation (1 = none).")
    user: str | None = None


# ---------------------------------------------------------------- helpers


def _stop_list(stop: Stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > 4:
        raise UsageError(f"stop: at most 4 stop strings, got {len(stops)}", param="stop")
    if not all(stops):
        raise UsageError("stop: an empty stop string would end every completion at once; leave it out",
                         param="stop")
    return stops


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    out = {}
    for k, v in (raw or {}).items():
        try:
            tid = int(k)
        except ValueError:
            raise UsageError(f"logit_bias: key {k!r} is not a token id", param="logit_bias") from None
        if tid < 0 or not -100 <= v <= 100:
            raise UsageError(f"logit_bias: token {k} -> {v}: ids are >= 0 and biases in [-100, 100]",
                             param="logit_bias")
        out[tid] = float(v)
    return out


_PARAM_NAMES = {"max_new_tokens": "max_tokens"}


def make_config(req: Sampling, max_tokens: int, tm: Any, *, logprobs: bool, top_logprobs: int,
                extra_stop: list[str] | None = None) -> GenerationConfig:
    """A validated GenerationConfig from request fields for ``tm`` (its unseen tokens biased away
    unless ``allow_unseen_tokens``; a bad field -> 400 naming the API field)."""
    try:
        return tm.generation_config(allow_unseen_tokens=req.allow_unseen_tokens,
            max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, n=req.n,
            stop=_stop_list(req.stop) + (extra_stop or []), seed=req.seed, presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty, logit_bias=_logit_bias(req.logit_bias), top_k=req.top_k,
            min_p=req.min_p, typical_p=req.typical_p, repetition_penalty=req.repetition_penalty,
            logprobs=logprobs, top_logprobs=top_logprobs)
    except UsageError as e:
        name = _PARAM_NAMES.get(e.param or "", e.param)
        msg = str(e)
        if e.param in _PARAM_NAMES:
            msg = msg.replace(e.param, name, 1)  # type: ignore[arg-type]
        raise UsageError(msg, param=name) from None


def with_watermark(cfg: GenerationConfig, tm: Any, policy: Any) -> tuple[GenerationConfig, Any]:
    """``cfg`` with the server policy's text watermark in place (none when off or without keys), and
    the watermark (what the release step records)."""
    wm = guard.watermark_in(policy.text_watermark(tm.tokenizer.vocab_size), cfg)
    if wm is None:
        return cfg, None
    return GenerationConfig.from_options(cfg, **guard.watermark_options(wm, {"processors": cfg.processors})), wm


def constraint_factory(fmt: ResponseFormat | None, tokenizer: Any) -> tuple[Any, int | None]:
    """For ``response_format`` json_schema/json_object: a per-sequence processor factory and the
    token budget the schema may need."""
    if fmt is None or fmt.type == "text":
        return None, None

    if fmt.type == "json_schema":
        if fmt.json_schema is None or not isinstance(fmt.json_schema.schema_, dict):
            raise UsageError("response_format.json_schema.schema: give a JSON Schema object",
                             param="response_format")
        schema = fmt.json_schema.schema_
    else:
        schema = {"type": "object"}
    try:
        grammar = C.json_schema(schema)
    except GencraftError:
        raise
    except Exception as e:  # the grammar engine rejected the schema
        raise UsageError(f"response_format: unsupported JSON Schema ({str(e).splitlines()[0][:200]})",
                         param="response_format") from None
    return (lambda: [C.ConstraintProcessor(grammar, tokenizer)]), grammar.max_tokens


def _finish(reason: str | None) -> str:
    return "stop" if reason in ("stop", "eos") else "length"


def _completion_logprobs(lps: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    if lps is None:
        return None
    offsets, pos = [], offset
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": [t.token for t in lps], "token_logprobs": [t.logprob for t in lps],
            "top_logprobs": [{a: lp for a, _, lp in t.top} for t in lps], "text_offset": offsets}


def _chat_logprobs(lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if lps is None:
        return None
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode("utf-8")),
                         "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(a.encode("utf-8"))}
                                          for a, _, lp in t.top]} for t in lps]}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------- chat formatting


def _content_text(m: ChatMessage) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    return "".join(str(p.get("text", "")) for p in m.content if isinstance(p, dict) and p.get("type") == "text")


ROLE_NAMES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def chat_prompt(tm: Any, messages: list[ChatMessage]) -> tuple[str, list[str]]:
    """The prompt text and extra stop strings for a conversation.

    Models whose tokenizer has a chat template use it; gencraft runs get a plain role-prefixed
    transcript (``User: ...`` lines, ending ``Assistant:``), stopped where the next turn would begin.
    """
    msgs = [{"role": m.role, "content": _content_text(m)} for m in messages]
    hf_tok = getattr(tm.tokenizer, "tok", None)
    if hf_tok is not None and getattr(hf_tok, "chat_template", None):
        try:
            text = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template that raises on this conversation (e.g. role order)
            raise UsageError(f"messages: the model's chat template rejected them ({str(e)[:200]})",
                             param="messages") from None
        return str(text), []
    for m in msgs:
        if m["role"] not in ROLE_NAMES:
            raise UsageError(f"messages: unknown role {m['role']!r}; use system, user or assistant",
                             param="messages")
    lines = [f"{ROLE_NAMES[m['role']]}: {m['content']}" for m in msgs]
    return "\n".join(lines) + "\nAssistant:", ["\nUser:", "\nSystem:"]


# ---------------------------------------------------------------- routes


@router.get("/v1/models", tags=["openai"], summary="List models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every run under GENCRAFT_HOME/runs and every configured ``hf:`` model."""
    return {"object": "list", "data": [e.to_openai() for e in request.app.state.gc.catalog.entries()]}


@router.get("/v1/models/{model_id:path}", tags=["openai"], summary="Describe a model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return request.app.state.gc.catalog.entry(model_id).to_openai()


def _encode(tm: Any, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = tm.tokenizer.encode(prompt)
    else:
        vocab = tm.tokenizer.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise UsageError(f"prompt: token ids must be in 0..{vocab - 1}", param="prompt")
        ids = list(prompt)
    return ids or [tm.tokenizer.eos_id]


def _prompts(p: CompletionRequest) -> list[str | list[int]]:
    if isinstance(p.prompt, str):
        return [p.prompt]
    if not p.prompt:
        return [""]
    if all(isinstance(x, int) for x in p.prompt):
        return [list(p.prompt)]  # type: ignore[arg-type]
    return list(p.prompt)  # type: ignore[arg-type]


@router.post("/v1/completions", tags=["openai"], summary="Text completion (streams with stream=true)")
async def completions(body: CompletionRequest, request: Request) -> Any:
    gc = request.app.state.gc
    tm, sched = await gc.catalog.text(body.model)
    prompts = _prompts(body)
    if len(prompts) > 16:
        raise UsageError(f"prompt: at most 16 prompts per request, got {len(prompts)}", param="prompt")
    factory, need = constraint_factory(body.response_format, tm.tokenizer)
    encoded = [_encode(tm, p) for p in prompts]
    max_tokens = body.max_tokens if body.max_tokens is not None else (need or 16)
    if need and body.max_tokens is None:
        max_tokens = need
    lp = body.logprobs is not None
    cfg, wm = with_watermark(make_config(body, max_tokens, tm, logprobs=lp, top_logprobs=body.logprobs or 0), tm,
                             gc.policy)
    best_of = _best_of(body)
    if best_of > cfg.n:
        cfg = GenerationConfig.from_options(cfg, n=best_of)
    for ids in encoded:
        check_prompt(ids, max_tokens, gc.config.max_prompt_tokens, gc.config.max_tokens, "prompt")
    tickets = [sched.submit(ids, GenerationConfig.from_options(cfg, first_index=pi * cfg.n),
                            timeout=gc.config.request_timeout, make_processors=factory)
               for pi, ids in enumerate(encoded)]  # choice pi * n + i samples as the engine's row
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    gc.metrics.prompt_tokens(body.model, sum(len(e) for e in encoded))
    texts = [p if isinstance(p, str) else tm.tokenizer.decode(p) for p in prompts]
    params = _params(body, cfg)
    if body.stream:
        return _stream(request, tickets, body, rid, created, "text_completion", texts, encoded, params, wm)
    results = [_keep_best(rs, body.n) for rs in await _gather(tickets)]
    final = await gc.release_texts("completion", body.model, texts, results, params, request, watermark=wm)
    choices, completion = [], 0
    for pi, (ticket_results, text) in enumerate(zip(results, texts, strict=True)):
        for r, released in zip(ticket_results, final[pi], strict=True):
            completion += r.completion_tokens
            out = (text + released) if body.echo else released
            choices.append({"index": pi * body.n + r.index, "text": out, "finish_reason": _finish(r.finish_reason),
                            "logprobs": _completion_logprobs(r.logprobs)})
    return {"id": rid, "object": "text_completion", "created": created, "model": body.model, "choices": choices,
            "usage": _usage(sum(len(e) for e in encoded), completion), "system_fingerprint": None}


def _best_of(body: CompletionRequest) -> int:
    """``best_of`` checked like OpenAI does: at least ``n``, and not with streaming."""
    if body.best_of is None:
        return body.n
    if body.best_of < body.n:
        raise UsageError(f"best_of: must be at least n ({body.n}), got {body.best_of}", param="best_of")
    if body.stream and body.best_of > body.n:
        raise UsageError("best_of: cannot be used with stream=true", param="best_of")
    return body.best_of


def _keep_best(results: list[GenerationResult], n: int) -> list[GenerationResult]:
    """The ``n`` results with the highest total log-probability (``best_of``), re-indexed 0..n-1."""
    if len(results) <= n:
        return results
    best = sorted(results, key=lambda r: r.score if r.score is not None else float("-inf"), reverse=True)[:n]
    for i, r in enumerate(best):
        r.index = i
    return best


@router.post("/v1/chat/completions", tags=["openai"], summary="Chat completion (streams with stream=true)")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    gc = request.app.state.gc
    tm, sched = await gc.catalog.text(body.model)
    prompt, extra_stop = chat_prompt(tm, body.messages)
    factory, need = constraint_factory(body.response_format, tm.tokenizer)
    ids = _encode(tm, prompt)
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = asked if asked is not None else (need or gc.config.default_chat_tokens)
    if factory is not None:
        extra_stop = []  # the grammar decides where the answer ends
    cfg, wm = with_watermark(make_config(body, max_tokens, tm, logprobs=body.logprobs or bool(body.top_logprobs),
                                         top_logprobs=body.top_logprobs or 0, extra_stop=extra_stop), tm, gc.policy)
    check_prompt(ids, max_tokens, gc.config.max_prompt_tokens, gc.config.max_tokens, "messages")
    ticket = sched.submit(ids, cfg, timeout=gc.config.request_timeout, make_processors=factory)
    gc.metrics.prompt_tokens(body.model, len(ids))
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    params = _params(body, cfg)
    if body.stream:
        return _stream(request, [ticket], body, rid, created, "chat.completion.chunk", [prompt], [ids], params, wm)
    results = (await _gather([ticket]))[0]
    final = (await gc.release_texts("chat", body.model, [prompt], [results], params, request, watermark=wm))[0]
    choices = [{"index": r.index, "message": {"role": "assistant", "content": released},
                "finish_reason": _finish(r.finish_reason), "logprobs": _chat_logprobs(r.logprobs)}
               for r, released in zip(results, final, strict=True)]
    return {"id": rid, "object": "chat.completion", "created": created, "model": body.model, "choices": choices,
            "usage": _usage(len(ids), sum(r.completion_tokens for r in results)), "system_fingerprint": None}


def _params(body: BaseModel, cfg: GenerationConfig) -> dict[str, Any]:
    d = body.model_dump(exclude={"prompt", "messages", "stream", "stream_options"}, exclude_none=True)
    d["seed_used"] = cfg.seed
    return d


async def _gather(tickets: list[Any]) -> list[list[GenerationResult]]:
    try:
        return list(await asyncio.gather(*(t.results() for t in tickets)))
    finally:
        for t in tickets:  # a request cancelled (client gone, timeout) stops its sequences
            t.cancel()


def _stream(request: Request, tickets: list[Any], body: Any, rid: str, created: int, obj: str,
            prompts: list[str], encoded: list[list[int]], params: dict[str, Any], watermark: Any) -> StreamingResponse:
    """Server-sent events: one chunk per text delta, a last chunk with each finish_reason, usage
    when ``stream_options.include_usage``, then ``data: [DONE]``. A client that goes away cancels
    its sequences (the scheduler drops them at the next step)."""
    gc = request.app.state.gc
    chat = obj == "chat.completion.chunk"
    n = tickets[0].sequences[0].cfg.n

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        c = {"id": rid, "object": obj, "created": created, "model": body.model, "choices": choices,
             "system_fingerprint": None}
        if body.stream_options is not None and body.stream_options.include_usage:
            c["usage"] = usage
        return c

    tasks: list[asyncio.Task] = []

    async def source() -> AsyncIterator[tuple[int, Any]]:
        """(ticket index, event or exception) of every ticket, as they come."""
        if len(tickets) == 1:  # one prompt: read it directly (no task and queue hand-off per token)
            try:
                async for ev in tickets[0].events():
                    yield 0, ev
            except Exception as e:  # noqa: BLE001 - handed to the consumer
                yield 0, e
            return
        merged: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump(ti: int, t: Any) -> None:
            try:
                async for ev in t.events():
                    await merged.put((ti, ev))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                await merged.put((ti, e))
            finally:
                await merged.put((ti, done))

        tasks.extend(asyncio.create_task(pump(i, t)) for i, t in enumerate(tickets))
        live = len(tickets)
        while live:
            ti, ev = await merged.get()
            if ev is done:
                live -= 1
            else:
                yield ti, ev

    async def events() -> AsyncIterator[str]:
        results: list[list[GenerationResult | None]] = [[None] * n for _ in tickets]
        t0 = time.monotonic()
        first = True
        try:
            if chat:
                yield _sse(chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                   "finish_reason": None, "logprobs": None} for i in range(n)]))
            if body.echo if not chat else False:
                for pi, p in enumerate(prompts):
                    for j in range(n):
                        yield _sse(chunk([{"index": pi * n + j, "text": p, "finish_reason": None,
                                           "logprobs": None}]))
            async for ti, ev in source():
                if isinstance(ev, BaseException):
                    if isinstance(ev, GencraftError):
                        yield _sse(gencraft_error_body(ev))
                        return
                    raise ev
                idx = ti * n + ev.index
                if ev.kind == "delta":
                    if first:
                        gc.metrics.ttft(body.model, time.monotonic() - t0)
                        first = False
                    if chat:
                        c = {"index": idx, "delta": {"content": ev.text}, "finish_reason": None,
                             "logprobs": _chat_logprobs(ev.logprobs) if ev.logprobs else None}
                    else:
                        c = {"index": idx, "text": ev.text, "finish_reason": None,
                             "logprobs": _completion_logprobs(ev.logprobs) if ev.logprobs else None}
                    yield _sse(chunk([c]))
                elif ev.kind == "done":
                    results[ti][ev.index] = ev.result
                    fin = _finish(ev.result.finish_reason)
                    c = ({"index": idx, "delta": {}, "finish_reason": fin, "logprobs": None} if chat
                         else {"index": idx, "text": "", "finish_reason": fin, "logprobs": None})
                    yield _sse(chunk([c]))
            completion = sum(r.completion_tokens for rs in results for r in rs if r is not None)
            if body.stream_options is not None and body.stream_options.include_usage:
                usage = _usage(sum(len(e) for e in encoded), completion)
                yield _sse({"id": rid, "object": obj, "created": created, "model": body.model, "choices": [],
                            "usage": usage, "system_fingerprint": None})
            await gc.release_texts("chat" if chat else "completion", body.model, prompts,
                                   [[r for r in rs if r is not None] for rs in results], params, request,
                                   watermark=watermark, raise_blocked=False)  # before [DONE]: a finished stream is in the library
            yield "data: [DONE]\n\n"
        finally:
            for t in tickets:
                t.cancel()
            for task in tasks:
                task.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---------------------------------------------------------------- images


def _size(size: str | None) -> tuple[int, int] | None:
    if size is None or size == "auto":
        return None
    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise UsageError(f"size {size!r}: expected WxH, e.g. 256x256", param="size") from None
    if not (8 <= w <= 2048 and 8 <= h <= 2048):
        raise UsageError(f"size {size!r}: width and height must be 8..2048", param="size")
    return w, h


def render_images(run: Any, body: ImageRequest) -> tuple[list[Any], list[dict[str, Any]], int]:
    """Sample and resize ``n`` images: the PIL images, their parameters and the seed used."""
    import secrets

    from PIL import Image

    size = _size(body.size)
    label = None
    if body.prompt.strip() and run.n_classes and body.prompt.strip() in run.classes:
        label = label_index(run, body.prompt.strip())
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    arr = sample_images(run, body.n, seed=seed, truncation=body.truncation, label=label)
    images, params = [], []
    for i, a in enumerate(arr):
        im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        if size is not None and im.size != size:
            im = im.resize(size, Image.NEAREST)
        images.append(im)
        params.append({"n": body.n, "index": i, "size": f"{im.size[0]}x{im.size[1]}", "label": label,
                       "truncation": body.truncation, "prompt": body.prompt})
    return images, params, seed


@router.post("/v1/images/generations", tags=["openai"], summary="Generate images (b64_json)")
async def images(body: ImageRequest, request: Request) -> dict[str, Any]:
    """The prompt picks the class of a conditional run when it names one of its classes; otherwise it
    is ignored (these models are not text-conditioned). Images come back as base64 PNG, watermarked,
    with the signed provenance manifest in an iTXt chunk and a C2PA manifest."""
    gc = request.app.state.gc
    run = await gc.catalog.image(body.model)
    images, params, seed = await asyncio.to_thread(render_images, run, body)
    made = [await gc.release(im, request=request, kind="image", label="image", model=run, model_name=body.model,
                             params=p, seed=seed, prompt=body.prompt) for im, p in zip(images, params, strict=True)]
    gc.metrics.images(body.model, len(made))
    return {"created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(rel.data).decode("ascii"), "revised_prompt": None,
                      "gencraft_id": rel.item_id} for rel in made]}


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size
