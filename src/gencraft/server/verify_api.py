"""``POST /v1/gencraft/verify``: the same three answers as ``gencraft verify``, over HTTP.

The body carries the file (base64) and, for text, its sidecar manifest; the server lays them out as
``gencraft verify`` would find them (``NAME`` and ``NAME.manifest.json`` in a private temporary
folder) and runs the same :func:`gencraft.guard.release.verify_file`, so the CLI, the server and
the web studio (its Verify tab) cannot disagree. ``status``: ``valid`` (signed by a key this server
trusts: its own or one added with ``gencraft keys trust``), ``unknown_key`` (intact, signed by a key
it does not trust), ``tampered`` or ``unsigned``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gencraft.errors import UsageError
from gencraft.guard.provenance import sidecar_path
from gencraft.guard.release import verify_file

router = APIRouter(prefix="/v1/gencraft", tags=["provenance"])


class VerifyRequest(BaseModel):
    content_b64: str = Field(description="The file's bytes, base64: generated text (UTF-8), a PNG, or audio.")
    filename: str = Field("file", max_length=200, description="Its name (the extension tells text from media).")
    manifest: dict[str, Any] | None = Field(None, description="The sidecar manifest (FILE.manifest.json) of a "
                                            "text or audio file; PNGs and Markdown front matter carry their own.")


def verify_bytes(data: bytes, filename: str = "file", manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify ``data`` exactly as ``gencraft verify`` verifies a file named ``filename`` with ``manifest``
    beside it; returns the verification as a dict (``status``, ``reason``, ``key_id``, ``trusted``...)."""
    name = Path(filename).name.strip() or "file"
    if name in (".", "..") or "\x00" in name:
        raise UsageError(f"filename {filename!r}: give a plain file name", param="filename")
    with tempfile.TemporaryDirectory(prefix="gencraft-verify-") as d:
        path = Path(d) / name
        path.write_bytes(data)
        if manifest is not None:
            sidecar_path(path).write_text(json.dumps(manifest), encoding="utf-8")
        return verify_file(path).to_dict()


@router.post("/verify", summary="Check a generated file's signed provenance (valid / unknown_key / tampered / unsigned)")
async def verify(body: VerifyRequest) -> dict[str, Any]:
    try:
        data = base64.b64decode(body.content_b64, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("content_b64: not valid base64", param="content_b64") from None
    return await asyncio.to_thread(verify_bytes, data, body.filename, body.manifest)
