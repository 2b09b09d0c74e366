"""A bounded loopback load test: concurrent streaming clients, no errors, no lost library rows."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

pytest.importorskip("fastapi")
from test_server import LiveServer, make_text_run  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402

CLIENTS, PER_CLIENT = 12, 3


def test_concurrent_streams_no_errors_no_lost_rows(tmp_path) -> None:
    make_text_run(tmp_path, "tiny", block_size=128)
    with LiveServer(ServerConfig(auth=False, home=tmp_path, rate_per_minute=0)) as s:

        async def client(c: int, http: httpx.AsyncClient) -> list[str]:
            texts = []
            for k in range(PER_CLIENT):
                body = {"model": "tiny", "prompt": f"client {c} req {k}: the", "max_tokens": 16 + c,
                        "temperature": 0.8, "seed": c * 100 + k, "stream": True}
                parts, done = [], False
                async with http.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200, await r.aread()
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            chunk = json.loads(line[6:])
                            assert "error" not in chunk, chunk
                            parts.append(chunk["choices"][0]["text"])
                assert done
                texts.append("".join(parts))
            return texts

        async def main() -> list[list[str]]:
            async with httpx.AsyncClient(base_url=s.url, timeout=120) as http:
                return list(await asyncio.gather(*(client(c, http) for c in range(CLIENTS))))

        results = asyncio.run(main())
        lib = httpx.get(s.url + "/v1/gencraft/library", params={"kind": "completion", "limit": 500}).json()
        _, sched = s.gc.catalog._text["tiny"]
        stats = sched.stats
    assert lib["total"] == CLIENTS * PER_CLIENT  # every finished stream is in the library
    stored = {(d["prompt"], d["text"]) for d in lib["data"]}
    for c, texts in enumerate(results):
        for k, text in enumerate(texts):
            assert (f"client {c} req {k}: the", text) in stored
    assert stats.max_active > 1  # the requests were batched together
