"""Kit and library endpoints over HTTP: write (streamed), game records, ad variants ranked by ratings."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from test_server import LiveServer, make_text_run  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("kits")
    make_text_run(home, "tiny", block_size=256)
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s:
        yield s


def sse(lines: list[str]) -> list[dict]:
    return [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]


def test_write_streams_with_memory_and_note(server: LiveServer) -> None:
    body = {"model": "tiny", "text": "The cat sat", "memory": "A story about a cat.", "note": "keep it calm",
            "tokens": 24, "seed": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/gencraft/write", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln]
    events = sse(lines)
    deltas = "".join(e.get("delta", "") for e in events)
    done = events[-1]
    assert lines[-1] == "data: [DONE]" and done["done"] is True
    assert done["text"] == "The cat sat" + deltas and len(deltas) > 0
    item = httpx.get(f"{server.url}/v1/gencraft/library/{done['id']}").json()
    assert item["kind"] == "write" and item["text"] == done["text"]
    assert "[Author's note: keep it calm]" in item["prompt"] and item["prompt"].startswith("A story about a cat.")
    assert item["manifest"]["content_sha256"] and item["parameters"]["note"] == "keep it calm"
    again = httpx.post(server.url + "/v1/gencraft/write", json=body | {"stream": False}, timeout=60).json()
    assert again["text"] == done["text"]  # same seed, same continuation, streamed or not


def test_game_records_are_validated_and_stored(server: LiveServer) -> None:
    r = httpx.post(server.url + "/v1/gencraft/game/item", json={"model": "tiny", "n": 2, "seed": 1}, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2
    for rec in data:
        assert rec["validation"]["valid"] and {"name", "rarity"} <= set(rec["record"])
        stored = httpx.get(f"{server.url}/v1/gencraft/library/{rec['id']}").json()
        assert json.loads(stored["text"]) == rec["record"] and stored["kind"] == "game"
    bad = httpx.post(server.url + "/v1/gencraft/game/spaceship", json={"model": "tiny"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "kind"


def test_ads_rank_toward_rated_variants(server: LiveServer) -> None:
    body = {"model": "tiny", "n": 3, "seed": 1, "brief": {"product": "Zap", "features": ["fast", "light"]},
            "rank_by_ratings": True}
    first = httpx.post(server.url + "/v1/gencraft/ads", json=body, timeout=120).json()["data"]
    assert len(first) == 3 and all(d["validation"]["valid"] for d in first)
    assert all("Zap" in (d["variant"]["headline"] + d["variant"]["description"]) for d in first)
    last = first[-1]
    for d in first[:-1]:
        assert httpx.post(f"{server.url}/v1/gencraft/library/{d['id']}/rating", json={"rating": -1}).status_code == 200
    r = httpx.post(f"{server.url}/v1/gencraft/library/{last['id']}/rating", json={"rating": 1, "note": "this one"})
    assert r.json() == {"id": last["id"], "rating": 1, "note": "this one"}
    second = httpx.post(server.url + "/v1/gencraft/ads", json=body, timeout=120).json()["data"]
    copy = ("headline", "description", "cta")
    assert [second[0]["variant"][k] for k in copy] == [last["variant"][k] for k in copy]
    assert second[0]["preference"] > 0 > second[-1]["preference"]


def test_library_endpoints(server: LiveServer) -> None:
    httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "zebra stripes", "max_tokens": 4},
               timeout=60)
    found = httpx.get(server.url + "/v1/gencraft/library", params={"q": "ZEBRA", "kind": "completion"}).json()
    assert found["total"] == 1
    item_id = found["data"][0]["id"]
    assert httpx.get(server.url + "/v1/gencraft/library", params={"model": "nope"}).json()["total"] == 0
    assert httpx.get(server.url + "/v1/gencraft/library", params={"since": "2999-01-01"}).json()["total"] == 0
    bad = httpx.post(f"{server.url}/v1/gencraft/library/{item_id}/rating", json={"rating": 3})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
    assert httpx.get(f"{server.url}/v1/gencraft/library/{item_id}/image").status_code == 404
    assert found["data"][0]["content_url"] is None and found["data"][0]["content_bytes"] is None  # a text item
    no_bytes = httpx.get(f"{server.url}/v1/gencraft/library/{item_id}/content")
    assert no_bytes.status_code == 404 and no_bytes.json()["error"]["param"] == "id"
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # binary content: listed by size, served by its URL
    pic = server.gc.library.add(kind="image", model="pixels", prompt="zebra picture", image=png, media_type="image/png")
    listed = httpx.get(server.url + "/v1/gencraft/library", params={"q": "zebra picture"}).json()["data"][0]
    assert "image_b64" not in listed and listed["content_bytes"] == len(png)
    got = httpx.get(server.url + listed["content_url"])
    assert got.headers["content-type"] == "image/png" and got.content == png
    assert httpx.get(f"{server.url}/v1/gencraft/library/{pic}").json()["image_b64"]  # one item: with its bytes
    assert httpx.delete(f"{server.url}/v1/gencraft/library/{item_id}").json()["deleted"] is True
    gone = httpx.get(f"{server.url}/v1/gencraft/library/{item_id}")
    assert gone.status_code == 404 and gone.json()["error"]["param"] == "id"
    docs = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/v1/gencraft/library", "/v1/gencraft/library/{item_id}/rating", "/v1/gencraft/ads",
            "/v1/gencraft/write", "/v1/gencraft/game/{kind}", "/v1/completions"} <= set(docs)


def test_studio_page_is_served(server: LiveServer) -> None:
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "gencraft studio" in r.text.lower()
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    assert Path  # noqa: B018 - keeps the import for type hints above


# ---------------------------------------------------------------- the kits' batches as jobs


def test_kit_batch_kinds_release_every_output(gencraft_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kits.write and kits.ads run in this process (kits.game in a worker: test_jobs.py's lifecycle): signed, verifiable
    files, one library item per piece or variant, progress per item, and a cancel between items."""
    from gencraft.guard import init_keys, verify_file
    from gencraft.jobs.kinds import CheckContext, JobContext, kind_of, parse_params
    from gencraft.library import Library
    from gencraft.train import metrics

    init_keys()
    make_text_run(gencraft_home, "tiny", block_size=256)
    events: list[dict] = []

    def run(kind: str, job_id: str, **params):
        k = kind_of(kind)
        p = parse_params(k, params)
        k.check(p, CheckContext(home=gencraft_home))
        ctx = JobContext(job_id=job_id, home=gencraft_home, attempt=1, say=lambda text: None, event=events.append)
        return k.run(p, ctx), ctx.out_dir

    res, out = run("kits.write", "job-w", model="tiny", titles=["A quiet town", " "], sections=1, section_tokens=12)
    assert res["files"] == ["01-a-quiet-town.md"] and verify_file(out / "01-a-quiet-town.md").ok
    res, out = run("kits.write", "job-c", model="tiny", mode="continue", text="The cat", n=2, tokens=8, format="txt")
    assert res["files"] == ["01-continuation.txt", "02-continuation.txt"]
    assert [x["seed"] for x in res["pieces"]] == [0, 1] and all(verify_file(out / f).ok for f in res["files"])
    assert [e["step"] for e in events if e["type"] == "progress"][-3:] == [0, 1, 2]
    res, out = run("kits.ads", "job-a", model="tiny", product="Zap", features=["fast"], n=2, candidates=4)
    assert len(res["variants"]) == len(res["library_ids"]) == 2 and verify_file(out / "ads.csv").ok
    lib = Library.open()
    try:
        assert {lib.get(i).kind for i in res["library_ids"]} == {"ads"}
    finally:
        lib.close()

    monkeypatch.setattr(metrics, "_stop_requested", True)  # a cancel arrived: stop before the next item
    with pytest.raises(metrics.StopRequested):
        run("kits.game", "job-g", model="tiny", record="names", n=2)
    assert not (gencraft_home / "jobs" / "job-g" / "outputs" / "names.json").exists()


def test_game_batch_job_gives_the_records_of_one_call(gencraft_home: Path) -> None:
    """A kits.game job samples in chunks of 8, yet its records are those of one ``gencraft game -n N
    --seed S`` call: chunk rows carry on the request's row index (``first_index``), watermark keyed alike."""
    from gencraft.apps import game
    from gencraft.apps._common import load_model, release_policy
    from gencraft.guard import init_keys
    from gencraft.jobs.kinds import GAME_CHUNK, CheckContext, JobContext, kind_of, parse_params

    init_keys()
    make_text_run(gencraft_home, "tiny", block_size=256)
    n = GAME_CHUNK + 3
    k = kind_of("kits.game")
    p = parse_params(k, {"model": "tiny", "record": "npc", "n": n, "seed": 3, "temperature": 1.0})
    k.check(p, CheckContext(home=gencraft_home))
    ctx = JobContext(job_id="job-g", home=gencraft_home, attempt=1, say=lambda text: None, event=lambda e: None)
    res = k.run(p, ctx)
    batch = json.loads((ctx.out_dir / "npc.json").read_text(encoding="utf-8"))
    tm = load_model(str(gencraft_home / "runs" / "tiny"))
    with release_policy(store=False) as policy:
        wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=1.0)
        assert wm is not None
        one = game.generate(tm, "npc", n=n, seed=3, temperature=1.0, watermark=wm)
    assert res["records"] == n and len(batch) == n
    assert batch == [r.value for r in one]
    assert len({json.dumps(v, sort_keys=True) for v in batch}) > 1  # sampled: the rows differ
