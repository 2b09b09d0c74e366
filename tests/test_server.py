"""The studio server through the official ``openai`` client on a loopback port, plus the scheduler.

The helpers at the top (tiny runs, a uvicorn server in a thread) are shared with the other
``test_server_*`` modules and ``test_studio_browser.py``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from gencraft.server import ServerConfig, create_app  # noqa: E402

CORPUS = ["the cat sat on the mat. ", "a dog ran in the park! ", "hello world, what a day. "] * 3


# ---------------------------------------------------------------- helpers (shared)


def make_text_run(home: Path, name: str = "tiny", *, block_size: int = 64, n_embd: int = 32, n_layer: int = 2,
                  peaked: bool = True, seed: int = 0) -> Path:
    """A random-weight GPT run with a char tokenizer under ``home/runs/name``."""
    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.runs import save_weights, write_info
    from gencraft.tokenize import train_tokenizer

    tok = train_tokenizer("char", CORPUS)
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=n_embd))
    if peaked:  # a peaked distribution: greedy paths are distinct, ties never happen
        with torch.no_grad():
            m.wte.weight.mul_(20)
    path = home / "runs" / name
    path.mkdir(parents=True)
    digest = save_weights(m, path / "model.safetensors")
    tok.save(path / "tokenizer.json")
    write_info(path, {"kind": "gpt", "run_id": name, "model": dataclasses.asdict(m.config), "model_digest": digest,
                      "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
                      "data": {"sources": [{"path": "corpus.txt", "sha256": "0" * 64, "license": "CC0-1.0"}]}})
    return path


def make_image_run(home: Path, name: str = "pixels") -> Path:
    """A random-weight class-conditional DCGAN run (16x16 grey, classes a/b)."""
    from gencraft.models.dcgan import DCGAN, DCGANConfig
    from gencraft.runs import save_weights, write_info

    torch.manual_seed(0)
    cfg = DCGANConfig(img_size=16, channels=1, n_classes=2, z_dim=16, g_ch=8, d_ch=8, emb_dim=8)
    m = DCGAN(cfg)
    path = home / "runs" / name
    path.mkdir(parents=True)
    digest = save_weights(m, path / "model.safetensors")
    write_info(path, {"kind": "dcgan", "run_id": name, "model": dataclasses.asdict(cfg), "model_digest": digest,
                      "image": {"size": 16, "channels": 1, "classes": ["a", "b"]}})
    return path


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a thread."""

    def __init__(self, config: ServerConfig) -> None:
        import uvicorn

        from gencraft.cli.serve import listen

        self.sock = listen("127.0.0.1", 0)  # as `gencraft serve --port 0` does
        self.port = config.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    @property
    def gc(self):
        return self.app.state.gc


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("studio")
    make_text_run(home, "tiny")
    make_text_run(home, "slow", block_size=1024, n_embd=128, n_layer=4, peaked=False)
    make_image_run(home, "pixels")
    return home


@pytest.fixture(scope="module")
def server(studio_home: Path):
    with LiveServer(ServerConfig(auth=False, home=studio_home, rate_per_minute=0)) as s:
        yield s


@pytest.fixture
def client(server: LiveServer):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def engine_text(home: Path, prompt: str, **options) -> str:
    from gencraft.backends import load

    return load(str(home / "runs" / "tiny")).generate(prompt, **options).text


# ---------------------------------------------------------------- OpenAI API


def test_models_lists_runs(client) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert {"tiny", "slow", "pixels"} <= set(models)
    assert models["pixels"].model_extra["kind"] == "dcgan"


def test_completion_matches_engine_and_reports_usage(client, studio_home: Path) -> None:
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=12, temperature=0, logprobs=3)
    want = engine_text(studio_home, "the cat", max_new_tokens=12, temperature=0)
    assert r.choices[0].text == want
    assert r.usage.prompt_tokens == len("the cat") and r.usage.completion_tokens == len(want)
    lp = r.choices[0].logprobs
    assert lp.tokens and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(len(t) <= 3 for t in lp.top_logprobs)


def test_sampling_fields_seed_and_n(client) -> None:
    kw = dict(model="tiny", prompt="a dog", max_tokens=10, temperature=0.9, top_p=0.9, seed=7, n=2,
              extra_body={"top_k": 5, "min_p": 0.01, "repetition_penalty": 1.2}, presence_penalty=0.5,
              frequency_penalty=0.3)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # same seed, same text
    assert sorted(c.index for c in a.choices) == [0, 1]


def test_seeded_sampling_matches_engine(client, studio_home: Path) -> None:
    """Bias, temperature and top-k run batched in the scheduler, yet a seeded sample is the engine's."""
    r = client.completions.create(model="tiny", prompt="a dog", max_tokens=20, temperature=0.8, seed=11,
                                  logit_bias={"3": 2.5}, extra_body={"top_k": 8})
    want = engine_text(studio_home, "a dog", max_new_tokens=20, temperature=0.8, seed=11, logit_bias={3: 2.5},
                       top_k=8)
    assert r.choices[0].text == want


def test_stop_strings_and_token_id_prompts(client) -> None:
    base = client.completions.create(model="tiny", prompt="the", max_tokens=8, temperature=0)
    text = base.choices[0].text
    stop = text[3:5]
    stopped = client.completions.create(model="tiny", prompt="the", max_tokens=8, temperature=0, stop=[stop])
    assert stopped.choices[0].text == text[:text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    r = client.completions.create(model="tiny", prompt=[1, 2, 3], max_tokens=3, temperature=0)
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 3


def test_logit_bias_bans_greedy_choice(client, studio_home: Path) -> None:
    from gencraft.tokenize import load_tokenizer

    tok = load_tokenizer(studio_home / "runs" / "tiny" / "tokenizer.json")
    base = client.completions.create(model="tiny", prompt="the cat", max_tokens=1, temperature=0)
    tid = tok.encode(base.choices[0].text)[0]
    biased = client.completions.create(model="tiny", prompt="the cat", max_tokens=1, temperature=0,
                                       logit_bias={str(tid): -100})
    assert biased.choices[0].text != base.choices[0].text


def test_chat_and_streaming_agree(client) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"}]
    full = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=15, temperature=0.7, seed=3)
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=15, temperature=0.7, seed=3,
                                            stream=True, stream_options={"include_usage": True})
    deltas, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                deltas.append(c.delta.content)
            finish = c.finish_reason or finish
    assert "".join(deltas) == full.choices[0].message.content
    assert full.choices[0].message.role == "assistant"
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens > 0


def test_completion_stream_raw_sse(server: LiveServer) -> None:
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)


def test_json_schema_response_format(client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "level": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["name", "level"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "a hero"}], seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "hero", "schema": schema}})
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"name", "level"} and 1 <= value["level"] <= 9 and len(value["name"]) <= 8


def test_errors_in_openai_shape(client, server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x")
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", temperature=-1)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:  # past the context is fine (the window shifts), past the cap not
        client.completions.create(model="tiny", prompt="x", max_tokens=5000)
    assert e.value.body["param"] == "max_tokens" and "4096" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", logit_bias={"99999": 1})
    assert e.value.body["param"] == "logit_bias"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="pixels", prompt="x")
    assert e.value.body["param"] == "model"
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(server.url + "/v1/completions", content=b"x" * (2 << 20), timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_images_b64_json_with_manifest(client) -> None:
    from PIL import Image

    from gencraft.guard.provenance import read_png_manifest

    r = client.images.generate(model="pixels", prompt="b", n=2, size="32x32", response_format="b64_json",
                               extra_body={"seed": 5})
    assert len(r.data) == 2
    data = base64.b64decode(r.data[0].b64_json)
    assert Image.open(io.BytesIO(data)).size == (32, 32)
    _, manifest = read_png_manifest(data)
    assert manifest["media_type"] == "image/png" and manifest["parameters"]["label"] == 1
    again = client.images.generate(model="pixels", prompt="b", n=2, size="32x32", extra_body={"seed": 5})
    pixels = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))).tobytes() for d in (again.data[1], r.data[1])]
    assert pixels[0] == pixels[1]  # same seed, same image (the manifests differ in their "created" second)
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model="pixels", prompt="b", size="huge")
    assert e.value.body["param"] == "size"


def test_generations_land_in_library_with_provenance(client, server: LiveServer) -> None:
    r = client.completions.create(model="tiny", prompt="library check", max_tokens=5, temperature=0)
    lib = httpx.get(server.url + "/v1/gencraft/library", params={"q": "library check", "kind": "completion"}).json()
    assert lib["total"] >= 1
    item = lib["data"][0]
    assert item["text"] == r.choices[0].text and item["model"] == "tiny"
    assert item["manifest"]["parameters"]["max_tokens"] == 5 and "moderation" in json.dumps(item["guard"])
    assert item["manifest"]["content_sha256"]


def test_disconnect_stops_generation(server: LiveServer, studio_home: Path) -> None:
    from gencraft.tokenize import load_tokenizer

    eos = load_tokenizer(studio_home / "runs" / "slow" / "tokenizer.json").eos_id
    body = {"model": "slow", "prompt": "the", "max_tokens": 1000, "temperature": 1.0, "stream": True,
            "logit_bias": {str(eos): -100}}  # no end-of-text: only the hang-up can stop it early
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {") and '"text": ""' not in line:
                assert '"error"' not in line, line
                break  # the first token arrived: hang up
    _, sched = asyncio.run(server.gc.catalog.text("slow"))
    deadline = time.monotonic() + 20
    while sched.stats.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sched.stats.active == 0 and sched.stats.cancelled >= 1
    assert sched.stats.tokens < 1000


def test_health_and_metrics(server: LiveServer, client) -> None:
    client.completions.create(model="tiny", prompt="metrics", max_tokens=3, temperature=0)
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and "tiny" in h["models_loaded"]
    text = httpx.get(server.url + "/metrics").text
    assert 'gencraft_requests_total{route="/v1/completions",status="200"}' in text
    assert 'gencraft_tokens_total{model="tiny",type="completion"}' in text
    assert "gencraft_request_seconds_bucket" in text and 'gencraft_queue_depth{model="tiny"}' in text


# ---------------------------------------------------------------- keys and limits


def test_api_keys_and_rate_limit(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    make_text_run(tmp_path, "tiny")
    monkeypatch.setenv("GENCRAFT_HOME", str(tmp_path))  # the CLI writes keys where the server reads them
    # one request a minute after a burst of 3: the bucket cannot refill while the test runs, however
    # loaded the machine (at 120 a minute it refilled every 0.5 s, and four slow requests got through)
    res = cli("keys", "create", "--name", "ci", "--rate", "1")
    assert res.code == 0
    key = res.out.strip().splitlines()[0]
    assert key.startswith("gck_")
    stored = (tmp_path / "api_keys.json").read_text()
    assert key not in stored and key.split("_", 2)[2] not in stored  # only a salted hash is kept
    with LiveServer(ServerConfig(home=tmp_path, rate_per_minute=600, rate_burst=3)) as s:
        anon = openai.OpenAI(base_url=s.url + "/v1", api_key="gck_00000000_nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anon.models.list()
        assert httpx.get(s.url + "/v1/models").status_code == 401
        good = openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)
        for _ in range(3):
            good.models.list()
        with pytest.raises(openai.RateLimitError) as e:
            good.models.list()
        assert e.value.response.headers.get("retry-after")
        assert httpx.get(s.url + "/health").status_code == 200  # public
        kid = key.split("_")[1]
        assert cli("keys", "revoke", kid).code == 0
        assert "revoked" in cli("keys", "list").out
        with pytest.raises(openai.AuthenticationError) as e:
            good.models.list()
        assert "revoked" in e.value.body["message"]


def test_no_auth_refused_off_loopback(cli) -> None:
    res = cli("serve", "--no-auth", "--host", "0.0.0.0")
    assert res.code == 2 and "--no-auth" in res.err
    from gencraft.errors import UsageError

    with pytest.raises(UsageError):
        create_app(ServerConfig(auth=False, host="192.168.1.5"))


# ---------------------------------------------------------------- the scheduler


def test_continuous_batching_matches_one_at_a_time(studio_home: Path) -> None:
    """Requests joining a running batch (different prompt lengths, staggered) decode exactly as alone."""
    from gencraft.backends import load
    from gencraft.generate import GenerationConfig
    from gencraft.server.scheduler import Scheduler

    tm = load(str(studio_home / "runs" / "tiny"))
    prompts = ["the cat sat", "a", "hello world, what", "dog", "the mat. a dog ran in", "wh"]
    want = [tm.generate(p, max_new_tokens=20 + 3 * i, temperature=0).text for i, p in enumerate(prompts)]
    sched = Scheduler(tm, max_batch=8)

    async def one(i: int, p: str) -> str:
        await asyncio.sleep(0.002 * i)
        cfg = GenerationConfig(max_new_tokens=20 + 3 * i, temperature=0)
        return (await sched.submit(tm.tokenizer.encode(p), cfg).results())[0].text

    async def main() -> list[str]:
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    try:
        got = asyncio.run(main())
    finally:
        sched.close()
    assert got == want
    assert sched.stats.max_active > 1  # they really shared batches


def test_new_requests_take_finished_rows_slots(studio_home: Path) -> None:
    """Closed-loop clients: finished rows stay as ghosts and the next requests are copied into their
    slots (or merged when they do not fit); every result is still exactly the one-at-a-time result."""
    from gencraft.backends import load
    from gencraft.generate import GenerationConfig
    from gencraft.server.scheduler import Scheduler

    tm = load(str(studio_home / "runs" / "tiny"))
    prompts = ["the cat sat", "a", "hello world, what", "dog", "the mat. a dog ran in", "wh", "sat on the mat"]
    jobs = [[(prompts[(c + k) % len(prompts)], 6 + (5 * c + 3 * k) % 13) for k in range(4)] for c in range(5)]
    want = {(p, n): tm.generate(p, max_new_tokens=n, temperature=0).text for job in jobs for p, n in job}
    sched = Scheduler(tm, max_batch=8)

    async def client(job: list[tuple[str, int]]) -> list[str]:
        out = []
        for p, n in job:
            res = await sched.submit(tm.tokenizer.encode(p), GenerationConfig(max_new_tokens=n, temperature=0)).results()
            out.append(res[0].text)
        return out

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(*(client(job) for job in jobs)))

    try:
        got = asyncio.run(main())
    finally:
        sched.close()
    assert got == [[want[pn] for pn in job] for job in jobs]
    assert sched.stats.reused > 0 and sched.stats.max_active > 2


def test_seeded_samples_in_a_shared_batch_are_the_engines(tmp_path: Path) -> None:
    """On a flat distribution (many tokens in play), each request sampled in a shared batch -- its own
    seed, bias, temperature and top-k -- gets exactly the tokens the engine samples for it alone."""
    from gencraft.backends import load
    from gencraft.generate import GenerationConfig
    from gencraft.server.scheduler import Scheduler

    tm = load(str(make_text_run(tmp_path, "flat", peaked=False)))
    opts = [dict(max_new_tokens=12 + 2 * i, temperature=0.7 + 0.2 * i, seed=100 + i, top_k=5 * i,
                 logit_bias={3 + i: 1.5}) for i in range(5)]
    prompts = ["the cat", "a", "hello world", "dog ran", "wh"]
    want = [tm.generate(p, **o).token_ids for p, o in zip(prompts, opts, strict=True)]
    sched = Scheduler(tm, max_batch=8)

    async def one(i: int) -> list[int]:
        await asyncio.sleep(0.002 * i)
        res = await sched.submit(tm.tokenizer.encode(prompts[i]), GenerationConfig(**opts[i])).results()
        return res[0].token_ids

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))

    try:
        got = asyncio.run(main())
    finally:
        sched.close()
    assert got == want
    assert sched.stats.max_active > 1
    assert len({t for ids in want for t in ids}) > 8  # really sampled, not one argmax path


def test_queue_bound_answers_429(studio_home: Path) -> None:
    from gencraft.backends import load
    from gencraft.generate import GenerationConfig
    from gencraft.server.errors import QueueFull
    from gencraft.server.scheduler import Scheduler

    tm = load(str(studio_home / "runs" / "slow"))
    sched = Scheduler(tm, max_batch=1, max_queue=2)

    async def main() -> None:
        cfg = GenerationConfig(max_new_tokens=1000, temperature=0, logit_bias={tm.tokenizer.eos_id: -100})
        tickets = [sched.submit([1, 2], cfg)]
        while sched.stats.active < 1:  # the first one runs (and fills the batch of one)
            await asyncio.sleep(0.005)
        tickets += [sched.submit([1, 2], cfg) for _ in range(2)]  # two wait: the queue is full
        with pytest.raises(QueueFull) as e:
            sched.submit([1, 2], cfg)
        assert e.value.status == 429 and sched.stats.queued == 2
        for t in tickets:
            t.cancel()

    try:
        asyncio.run(main())
    finally:
        sched.close()


def test_served_text_is_watermarked_and_signed_with_the_servers_keys(tmp_path: Path, monkeypatch) -> None:
    from gencraft.guard import init_keys

    make_text_run(tmp_path, "tiny")
    monkeypatch.setenv("GENCRAFT_HOME", str(tmp_path))
    init_keys()  # before the server starts: it reads its keys once, at startup
    with LiveServer(ServerConfig(auth=False, home=tmp_path, rate_per_minute=0)) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        c.completions.create(model="tiny", prompt="watermark check", max_tokens=8, temperature=0.8, seed=3)
        lib = httpx.get(s.url + "/v1/gencraft/library", params={"q": "watermark check"}).json()
    manifest = lib["data"][0]["manifest"]
    assert manifest["watermark"] and manifest["watermark"]["key_id"]
    assert manifest["signature"]["alg"] == "Ed25519"
