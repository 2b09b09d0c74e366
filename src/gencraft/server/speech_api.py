"""OpenAI's ``POST /v1/audio/speech``: text -> audio with a trained voice or espeak-ng.

``model`` is a ``tts`` run from ``GET /v1/models`` or ``espeak``. ``voice``: for a run, ``default``, the
run's name or its speaker's name (a run has one speaker); for ``espeak``, an espeak-ng voice (``en-us``,
``en+f4``, ``cmn``...) or one of OpenAI's six names, each mapped to a distinct espeak-ng voice.
``response_format`` ``wav`` (signed manifest in the ``x-gencraft-manifest`` header, base64 JSON),
``pcm`` (raw 16-bit little-endian mono at 22,050 Hz, streamed: the first ~0.4 s of a sentence is sent
while the rest is vocoded; the manifest is in the library, stored after the last byte) or ``flac``;
``speed`` 0.25-4. Every response is watermarked (with keys), and stored in the library.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from gencraft import audio
from gencraft.apps.speech import speak
from gencraft.errors import GuardError, UsageError
from gencraft.generate.speech import Speaker, check_text

router = APIRouter()

OPENAI_VOICES = {"alloy": "en-us", "echo": "en-us+m3", "fable": "en+m1", "onyx": "en-us+m7", "nova": "en-us+f3",
                 "shimmer": "en+f4", "ash": "en-us+m2", "coral": "en-us+f2", "sage": "en+f2", "ballad": "en+m4",
                 "verse": "en-us+m4"}
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}


class SpeechRequest(BaseModel):
    model: str = Field(description="A tts run from GET /v1/models, or espeak.")
    input: str = Field(description="The text to say (at most 100,000 characters).", max_length=100_000)
    voice: str = Field("default", description="default / the run's speaker, or an espeak-ng or OpenAI voice name.")
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus", "aac"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None  # OpenAI's steering text: these voices cannot follow it; ignored
    stream_format: Literal["audio", "sse"] | None = None
    seed: int | None = Field(None, ge=0, le=2**62)


def _speaker(gc: Any, model: str, voice: str) -> Any:
    """The loaded :class:`~gencraft.generate.speech.Speaker` for ``model``/``voice``."""
    if model == "espeak":
        name = OPENAI_VOICES.get(voice, voice)
        if name in ("default", ""):
            name = "espeak"
        spec = name if name == "espeak" else f"espeak:{name}"
        sp = Speaker.load(spec)
        sp.sentence("a", 1.0)  # an unknown espeak voice fails here, before anything is sent
        return sp
    entry = gc.catalog.entry(model)
    if entry.kind != "tts":
        raise UsageError(f"model {model!r} is a {entry.kind} run, not a voice; use a tts run or espeak",
                         param="model")
    sp = Speaker.load(entry.path)  # loaded once per process (Speaker.load keeps it while its files are unchanged)
    speaker = str(sp.info.get("speaker") or "")
    if voice not in ("default", model, speaker) and voice.lower() != speaker.lower():
        raise UsageError(f"voice {voice!r}: model {model!r} speaks only with voice 'default' "
                         f"(speaker {speaker or 'unnamed'})", param="voice")
    return sp


def _encode(result: Any, fmt: str) -> bytes:
    if fmt == "wav":
        return result.wav_bytes()
    if fmt == "pcm":
        return audio.to_pcm16(result.audio).tobytes()
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.to_pcm16(result.audio), result.sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _speak(gc: Any, request: Request, body: SpeechRequest, sp: Any, **options: Any) -> Any:
    """:func:`gencraft.apps.speech.speak` under the server's release policy (moderated, watermarked,
    signed, stored with the request's API key); a blocked text is a 400 naming ``input``."""
    try:
        return speak(body.input, sp, speed=body.speed, seed=body.seed if body.seed is not None else 0,
                     policy=gc.policy, api_key=getattr(request.state, "key_id", None),
                     params={"response_format": body.response_format, "model": body.model}, **options)
    except GuardError as e:
        if e.param == "prompt":
            e.param = "input"
        raise


@router.post("/v1/audio/speech", tags=["openai"], summary="Text to speech (wav, pcm, flac)")
async def speech(body: SpeechRequest, request: Request) -> Response:
    """Say ``input`` in a trained voice or with espeak-ng. ``pcm`` streams as the speech is made."""
    gc = request.app.state.gc
    if body.response_format not in MEDIA_TYPES:
        raise UsageError(f"response_format {body.response_format!r}: this server writes wav, pcm or flac",
                         param="response_format")
    if body.stream_format == "sse":
        raise UsageError("stream_format 'sse': not supported; use response_format pcm to stream audio",
                         param="stream_format")
    check_text(body.input)
    sp = await asyncio.to_thread(_speaker, gc, body.model, body.voice)
    if body.response_format == "pcm":  # streamed: the first piece of speech is sent while the rest is made
        return await _pcm_stream(gc, request, body, sp)
    result = await asyncio.to_thread(_speak, gc, request, body, sp)
    data = _encode(result, body.response_format)
    headers = {"x-gencraft-manifest": base64.b64encode(json.dumps(result.manifest).encode()).decode("ascii"),
               "x-gencraft-engine": result.engine, "x-gencraft-seconds": f"{result.duration:.3f}"}
    if result.item_id is not None:
        headers["x-gencraft-item-id"] = str(result.item_id)
    return Response(data, media_type=MEDIA_TYPES[body.response_format], headers=headers)


_DONE = object()


async def _pcm_stream(gc: Any, request: Request, body: SpeechRequest, sp: Any) -> Response:
    """Raw PCM piece by piece as the release step lets each one out (watermarked); the first is
    sent while the rest is made, the signed manifest and library item follow the last. A text the
    policy blocks is a 400 before anything is sent; a client that goes away stops the synthesis."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)  # a slow client holds the synthesis back, not memory
    gone = threading.Event()

    def send(pcm: bytes) -> None:
        if gone.is_set():
            raise ConnectionAbortedError("the client went away")
        asyncio.run_coroutine_threadsafe(queue.put(pcm), loop).result()

    def work() -> None:
        try:
            _speak(gc, request, body, sp, keep_audio=False, on_chunk=send)
            end: Any = _DONE
        except BaseException as e:  # noqa: BLE001 - handed to the response, which raises or stops
            end = e
        if not gone.is_set():
            asyncio.run_coroutine_threadsafe(queue.put(end), loop).result()

    task = asyncio.create_task(asyncio.to_thread(work))
    first = await queue.get()
    if isinstance(first, BaseException):  # nothing sent yet: an OpenAI-style error
        await task
        raise first

    async def chunks():
        item = first
        try:
            while item is not _DONE:
                if isinstance(item, BaseException):
                    return  # the status line is out: the stream just ends
                yield item
                item = await queue.get()
        finally:
            gone.set()
            while not queue.empty():  # let a sender blocked on a full queue finish
                queue.get_nowait()
            await task

    return StreamingResponse(chunks(), media_type=MEDIA_TYPES["pcm"])
