"""Serving benchmark: continuous batching vs one-at-a-time, 1/4/16/64 concurrent streaming clients.

A random-weight 10.7M GPT (6 layers, 6 heads, 384 wide, vocab 8000 byte-level BPE trained on
tinyshakespeare, context 256) served by ``gencraft serve``'s app in a subprocess on a loopback
port. Each client streams completions of a 64-token prompt, 128 new tokens (end-of-text banned,
so every request makes exactly 128), temperature 0.8; clients are closed loops (next request when
the last one ends) starting spread over ``--stagger`` seconds (0 = a burst: every prefill at once)
and sending requests for ``--duration`` seconds after the last one arrived.
Reported, for both schedulers side by side with the issue's targets:

* sustained tok/s: the completion tokens of the requests that ended inside the window from the
  last client's arrival to the end of ``--duration`` (all N clients in their loops; the
  ramp-up while clients arrive and the tail while the last requests drain are left out), divided
  by the window's length;
* whole-run tok/s: every token over the wall clock from the first request to the last byte;
* time to first token (p50/p95) over every request.

    .venv/bin/python bench/serve.py                   # all levels
    .venv/bin/python bench/serve.py --levels 1 16     # fewer
    .venv/bin/python bench/serve.py --llama-cpp DIR   # gencraft serve beside llama.cpp's llama-server

``--llama-cpp DIR`` (a llama.cpp tree with ``build/bin/llama-server``): the same weights written as GGUF
(bench/llamacpp.py), served by ``llama-server -np 16`` (16 slots, continuous batching; ``-c`` 16 x 256, as
llama-server divides its context among the slots) beside ``gencraft serve`` (continuous batching, at most 16
rows: ``--slots``), the same clients sending the same 64 prompt token ids, exactly 128 new tokens each
(end-of-text banned / ignored, and every response's count checked), temperature 0.8 over the whole
vocabulary on both sides, the two servers taking turns level by level.
"""

from __future__ import annotations  # noqa: I001 (gencraft is imported first on purpose)
# ruff: noqa: E402 (the imports below must follow the thread policy chosen before torch loads)

import gencraft  # first: the thread-pool wait policy is asked for before torch/numpy load

gencraft.use_thread_policy("decode")  # a server decodes

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = Path(os.environ.get("GENCRAFT_SHARED_DATA", "/work/shared/data")) / "tinyshakespeare.txt"
PROMPT_TOKENS, NEW_TOKENS = 64, 128
TARGET_SPEEDUP, TARGET_P95_TTFT = 3.0, 0.5


def make_run(home: Path) -> tuple[str, int]:
    """The 10.7M GPT run (random weights) and a prompt of exactly PROMPT_TOKENS tokens; returns (prompt, eos)."""
    import torch

    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.runs import save_weights, write_info
    from gencraft.tokenize import train_tokenizer

    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.is_file() else "to be or not to be " * 20000
    tok = train_tokenizer("bpe", [text[i:i + 2000] for i in range(0, len(text), 2000)], vocab_size=8000)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=8000, block_size=256, n_layer=6, n_head=6, n_embd=384)
    model = GPT(cfg).eval()
    path = home / "runs" / "gpt10m"
    path.mkdir(parents=True)
    save_weights(model, path / "model.safetensors")
    tok.save(path / "tokenizer.json")
    write_info(path, {"kind": "gpt", "run_id": "bench", "model": dataclasses.asdict(cfg),
                      "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id}})
    ids = tok.encode(text[:4000])[:PROMPT_TOKENS]
    print(f"model: {model.num_params(non_embedding=False) / 1e6:.1f}M parameters, tokenizer {tok.vocab_size} tokens",
          flush=True)
    return tok.decode(ids), tok.eos_id


SERVER = """
import sys, uvicorn
from pathlib import Path
from gencraft.server import ServerConfig, create_app
home, port, continuous, batch = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
app = create_app(ServerConfig(auth=False, home=home, port=port, rate_per_minute=0, continuous=continuous,
                              max_batch=batch, max_queue=1024, queue_timeout=600, store=False))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(http: httpx.AsyncClient, body: dict) -> tuple[float, int, float]:
    """(time to first token, completion tokens, end time) of one streamed completion."""
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            # parse only what is measured (the first text, the usage, errors): the clients share the
            # server's 2 cores, so the load generator is kept cheap
            if not line.startswith("data: {") or (ttft is not None and '"usage"' not in line and '"error"' not in line):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk["choices"]:
                if c.get("text") and ttft is None:
                    ttft = time.perf_counter() - t0
    return ttft if ttft is not None else float("nan"), tokens, time.perf_counter()


def summary(res: list[tuple[float, int, float]], t0: float, wall: float, window: tuple[float, float]) -> dict:
    """Figures of one level from (ttft, tokens, end time) per request; ``window`` (start, end) in seconds
    from ``t0`` is where sustained throughput is counted."""
    ttfts = sorted(r[0] for r in res)
    lo, hi = window
    inside = sum(r[1] for r in res if lo <= r[2] - t0 <= hi)
    return {"requests": len(res), "tok_s": sum(r[1] for r in res) / wall, "sustained": inside / (hi - lo),
            "ttft_p50": statistics.median(ttfts), "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]}


def gencraft_body(prompt: str | list[int], eos: int) -> dict:
    """A request to gencraft serve: ``prompt`` (text or token ids), 128 new tokens, end-of-text banned."""
    return {"model": "gpt10m", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0.8, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": {str(eos): -100}}


Send = Callable[[httpx.AsyncClient, dict], Awaitable[tuple[float, int, float]]]


async def level(url: str, clients: int, duration: float, stagger: float, body: dict, send: Send = one_request,
                fresh: bool = False) -> dict:
    """``clients`` closed-loop clients sending ``body`` (each request its own seed) through ``send``:
    :func:`one_request` to gencraft, :func:`one_request_llama` to llama-server. ``fresh``: a new connection
    for every request (``Connection: close``), as llama-server needs: it closes the connection after every
    streamed response while announcing keep-alive (its chunked-content provider returns false after
    ``sink.done()``, which its cpp-httplib counts as a cancelled write), so a client that reuses the
    connection has its next request cut ("Server disconnected without sending a response")."""
    keep = 0 if fresh else clients + 4
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=keep)
    headers = {"Connection": "close"} if fresh else None
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits, headers=headers) as http:
        await send(http, body | {k: 4 for k in ("max_tokens", "n_predict") if k in body})  # warm-up (model load)

        t0 = time.perf_counter()
        end = t0 + stagger + duration

        async def client(c: int) -> list[tuple[float, int, float]]:
            await asyncio.sleep(stagger * c / clients)  # clients arrive spread over `stagger` seconds
            out, k = [], 0
            while not out or time.perf_counter() < end:
                out.append(await send(http, body | {"seed": c * 1000 + k}))
                k += 1
            return out

        res = [r for rs in await asyncio.gather(*(client(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    short = [r[1] for r in res if r[1] != NEW_TOKENS]
    if short:  # every request must be the same work: exactly NEW_TOKENS new tokens
        raise RuntimeError(f"{url}: {len(short)} of {len(res)} requests made {short[:5]} tokens, not {NEW_TOKENS}")
    return {"clients": clients, **summary(res, t0, wall, (stagger, stagger + duration))}


def scheduler_only(home: Path, clients: int, duration: float, prompt: str, eos: int, stagger: float,
                   continuous: bool) -> dict:
    """The same workload straight into a Scheduler (no HTTP, no client in this process's way)."""
    from gencraft.backends import load
    from gencraft.generate import GenerationConfig
    from gencraft.server.scheduler import Scheduler

    tm = load(str(home / "runs" / "gpt10m"))
    ids = tm.tokenizer.encode(prompt)
    sched = Scheduler(tm, max_batch=64, max_queue=1024, queue_timeout=600, continuous=continuous)

    async def one(seed: int) -> tuple[float, int, float]:
        t0 = time.perf_counter()
        cfg = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=0.8, logit_bias={eos: -100}, seed=seed)
        ttft, n = None, 0
        async for ev in sched.submit(ids, cfg).events():
            if ev.kind == "delta" and ev.text and ttft is None:
                ttft = time.perf_counter() - t0
            if ev.kind == "done":
                n = ev.result.completion_tokens
        return ttft if ttft is not None else float("nan"), n, time.perf_counter()

    t0 = 0.0

    async def client(c: int) -> list[tuple[float, int, float]]:
        await asyncio.sleep(stagger * c / clients)
        out, k = [], 0
        while not out or time.perf_counter() < t0 + stagger + duration:
            out.append(await one(c * 1000 + k))
            k += 1
        return out

    async def run() -> tuple[list[tuple[float, int, float]], float]:
        nonlocal t0
        await one(0)  # warm-up
        t0 = time.perf_counter()
        res = [r for rs in await asyncio.gather(*(client(c) for c in range(clients))) for r in rs]
        return res, time.perf_counter() - t0

    try:
        res, wall = asyncio.run(run())
    finally:
        sched.close()
    return summary(res, t0, wall, (stagger, stagger + duration))


def wait_healthy(proc: subprocess.Popen, port: int, name: str, timeout: float = 120) -> str:
    """The server's URL once ``GET /health`` answers 200; a server that exits or never answers is an error."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode})")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


def serve(home: Path, continuous: bool, max_batch: int = 64) -> tuple[subprocess.Popen, str]:
    """``gencraft serve``'s app (uvicorn) in a subprocess; ``max_batch``: the most sequences decoded together."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(home), str(port), "1" if continuous else "0",
                             str(max_batch)],
                            env=dict(os.environ, GENCRAFT_HOME=str(home)))
    return proc, wait_healthy(proc, port, "gencraft serve")


def llama_server(llama_dir: Path, gguf: Path, slots: int, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    """``llama-server`` on ``gguf`` with ``slots`` parallel sequences (continuous batching); ``-c`` is the
    whole KV cache, which llama-server divides among the slots, so it is ``slots`` times the model's context
    (each slot holds a 64 + 128-token request: 192 of 256 positions). Its log goes to ``log`` (printed
    when it fails); returns the process and its URL once it answers /health."""
    port = free_port()
    exe = llama_dir / "build" / "bin" / "llama-server"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}  # its own defaults
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(exe), "-m", str(gguf), "--port", str(port), "-np", str(slots), "-c",
                                 str(slots * 256), "-t", str(threads), "--no-webui"], env=env,
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        return proc, wait_healthy(proc, port, "llama-server")
    except RuntimeError as e:
        raise RuntimeError(f"{e}; its log ends: {log_tail(log)}") from None


def log_tail(log: Path, n: int = 1500) -> str:
    return log.read_text(errors="replace")[-n:] if log.is_file() else "(no log)"


async def one_request_llama(http: httpx.AsyncClient, body: dict) -> tuple[float, int, float]:
    """(time to first token, tokens, end time) of one streamed llama-server ``/completion``; a prompt
    that was not read as the 64 ids sent is an error (the two servers must do the same work)."""
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async with http.stream("POST", "/completion", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"llama-server answered {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {") or (ttft is not None and '"stop":true' not in line):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"llama-server: {chunk['error']}")
            if chunk.get("content") and ttft is None:
                ttft = time.perf_counter() - t0
            if chunk.get("stop"):
                tokens = int(chunk.get("tokens_predicted") or chunk.get("timings", {}).get("predicted_n", 0))
                read = chunk.get("timings", {}).get("prompt_n")
                if read is not None and read != len(body["prompt"]):
                    raise RuntimeError(f"llama-server read {read} prompt tokens, not the {len(body['prompt'])} sent")
    return ttft if ttft is not None else float("nan"), tokens, time.perf_counter()


def llama_body(ids: list[int]) -> dict:
    """The same request to llama-server's ``/completion``: the prompt's ids, 128 new tokens with end-of-text
    ignored, sampled from the whole distribution at temperature 0.8 (its sampler chain cut to temperature
    alone, as gencraft's request: no top-k/top-p/min-p), no prompt cache (every request prefills its prompt)."""
    return {"prompt": ids, "n_predict": NEW_TOKENS, "ignore_eos": True, "temperature": 0.8,
            "samplers": ["temperature"], "stream": True, "cache_prompt": False}


def ratio(a: float, b: float) -> str:
    """``a / b`` as "1.23x"; "-" when ``b`` is 0 (no request ended inside a sustained window)."""
    return f"{a / b:.2f}x" if b else "-"


def versus_llama(args: argparse.Namespace, home: Path, prompt: str, eos: int) -> None:
    """gencraft serve and llama-server on the same weights, both batching at most ``--slots`` sequences
    (llama-server ``-np``, gencraft ``max_batch``), taking turns level by level."""
    import llamacpp  # bench/llamacpp.py, beside this file

    from gencraft.backends import load

    tm = load(str(home / "runs" / "gpt10m"))
    ids = tm.tokenizer.encode(prompt)
    assert len(ids) == PROMPT_TOKENS, len(ids)
    gguf = llamacpp.write_gguf(tm.model, home / "gpt10m-f32.gguf", "f32", args.llama_cpp)
    threads = len(os.sched_getaffinity(0))
    log = home / "llama-server.log"
    ours = serve(home, True, args.slots)
    theirs = llama_server(args.llama_cpp, gguf, args.slots, threads, log)
    rows = []
    try:
        for n in args.levels:
            # the same clients for both: a connection per request (llama-server closes each after its stream)
            g = asyncio.run(level(ours[1], n, args.duration, args.stagger, gencraft_body(ids, eos), fresh=True))
            try:
                ll = asyncio.run(level(theirs[1], n, args.duration, args.stagger, llama_body(ids), one_request_llama,
                                       fresh=True))
            except (httpx.HTTPError, RuntimeError) as e:
                raise RuntimeError(f"llama-server at {n} clients: {type(e).__name__}: {e}; "
                                   f"its log ends: {log_tail(log)}") from None
            rows.append((n, g, ll))
            print(f"{n:>3} clients  gencraft {g['requests']:>4} req sustained {g['sustained']:7.1f} tok/s (TTFT p95 "
                  f"{g['ttft_p95'] * 1000:5.0f} ms)  llama-server {ll['requests']:>4} req {ll['sustained']:7.1f} tok/s "
                  f"(p95 {ll['ttft_p95'] * 1000:5.0f} ms)  ratio {ratio(g['sustained'], ll['sustained'])}  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for proc, _ in (ours, theirs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"\nsame weights (10.7M GPT, f32), {PROMPT_TOKENS} prompt ids + exactly {NEW_TOKENS} new tokens a request "
          f"(checked on both sides), temperature 0.8 over the whole vocabulary, a connection per request, clients spread over {args.stagger:g} s "
          f"then {args.duration:g} s of requests; llama-server -np {args.slots} -c {args.slots * 256} -t {threads}, "
          f"gencraft max_batch {args.slots}; aim: >= 1.0x llama-server's sustained tok/s at 16 clients")
    print("| clients | requests gencraft / llama-server | gencraft sustained tok/s (whole run) "
          "| llama-server sustained tok/s (whole run) | ratio sustained (whole run) "
          "| TTFT p50 / p95 gencraft (ms) | TTFT p50 / p95 llama-server (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, g, ll in rows:
        print(f"| {n} | {g['requests']} / {ll['requests']} | {g['sustained']:.0f} ({g['tok_s']:.0f}) "
              f"| {ll['sustained']:.0f} ({ll['tok_s']:.0f}) "
              f"| {ratio(g['sustained'], ll['sustained'])} ({ratio(g['tok_s'], ll['tok_s'])}) "
              f"| {g['ttft_p50'] * 1000:.0f} / {g['ttft_p95'] * 1000:.0f} "
              f"| {ll['ttft_p50'] * 1000:.0f} / {ll['ttft_p95'] * 1000:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--duration", type=float, default=15.0,
                    help="seconds every client keeps sending requests after the last one arrived")
    ap.add_argument("--scheduler-only", type=int, nargs="*", default=[16],
                    help="also measure these client counts straight into the scheduler (no HTTP)")
    ap.add_argument("--stagger", type=float, default=2.0,
                    help="clients start spread over this many seconds (0 = all at once, a burst)")
    ap.add_argument("--llama-cpp", type=Path, default=None, metavar="DIR",
                    help="a llama.cpp tree with build/bin/llama-server: serve the same weights beside gencraft")
    ap.add_argument("--slots", type=int, default=16,
                    help="with --llama-cpp: sequences each server decodes together (llama-server -np, gencraft max_batch)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gencraft-bench-serve-"))
    prompt, eos = make_run(home)
    if args.llama_cpp is not None:
        versus_llama(args, home, prompt, eos)
        return
    results: dict[str, list[dict]] = {"one-at-a-time": [], "continuous": []}
    servers = {name: serve(home, continuous) for name, continuous in (("one-at-a-time", False),
                                                                      ("continuous", True))}
    try:  # the two schedulers alternate level by level, so a change in CPU contention hits both alike
        for n in args.levels:
            for name, (_, url) in servers.items():
                r = asyncio.run(level(url, n, args.duration, args.stagger, gencraft_body(prompt, eos)))
                results[name].append(r)
                print(f"{name:>14}  {n:>3} clients  {r['requests']:>4} req  sustained {r['sustained']:7.1f} tok/s  "
                      f"whole run {r['tok_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50'] * 1000:6.0f} ms  "
                      f"p95 {r['ttft_p95'] * 1000:6.0f} ms", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{PROMPT_TOKENS}-token prompt + {NEW_TOKENS} new tokens per request, clients spread over "
          f"{args.stagger:g} s, then {args.duration:g} s of requests; target: >= {TARGET_SPEEDUP:g}x throughput at "
          f"16 clients, p95 TTFT < {TARGET_P95_TTFT * 1000:.0f} ms")
    print("| clients | requests | one-at-a-time tok/s sustained (whole run) | continuous tok/s sustained (whole run) "
          "| speed-up sustained (whole run) | TTFT p50 / p95 one-at-a-time (ms) | TTFT p50 / p95 continuous (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for a, b in zip(results["one-at-a-time"], results["continuous"], strict=True):
        print(f"| {a['clients']} | {a['requests']} / {b['requests']} | {a['sustained']:.0f} ({a['tok_s']:.0f}) "
              f"| {b['sustained']:.0f} ({b['tok_s']:.0f}) "
              f"| {b['sustained'] / a['sustained']:.1f}x ({b['tok_s'] / a['tok_s']:.1f}x) "
              f"| {a['ttft_p50'] * 1000:.0f} / {a['ttft_p95'] * 1000:.0f} "
              f"| {b['ttft_p50'] * 1000:.0f} / {b['ttft_p95'] * 1000:.0f} |")
    for n in args.scheduler_only:
        a = scheduler_only(home, n, args.duration, prompt, eos, args.stagger, continuous=False)
        b = scheduler_only(home, n, args.duration, prompt, eos, args.stagger, continuous=True)
        print(f"scheduler only (no HTTP), {n} clients: one-at-a-time {a['sustained']:.0f} tok/s sustained "
              f"({a['tok_s']:.0f} whole run), continuous {b['sustained']:.0f} ({b['tok_s']:.0f}): "
              f"{b['sustained'] / a['sustained']:.1f}x ({b['tok_s'] / a['tok_s']:.1f}x); TTFT p50/p95 "
              f"{a['ttft_p50'] * 1000:.0f}/{a['ttft_p95'] * 1000:.0f} vs {b['ttft_p50'] * 1000:.0f}/"
              f"{b['ttft_p95'] * 1000:.0f} ms", flush=True)
    at16 = [(a, b) for a, b in zip(results["one-at-a-time"], results["continuous"], strict=True) if a["clients"] == 16]
    if at16:
        a, b = at16[0]
        ok = b["sustained"] / a["sustained"] >= TARGET_SPEEDUP and b["ttft_p95"] < TARGET_P95_TTFT
        print(f"\n16 clients: {b['sustained'] / a['sustained']:.1f}x sustained (target {TARGET_SPEEDUP:g}x), "
              f"{b['tok_s'] / a['tok_s']:.1f}x whole run; p95 TTFT {b['ttft_p95'] * 1000:.0f} ms "
              f"(target < {TARGET_P95_TTFT * 1000:.0f}) -> {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
