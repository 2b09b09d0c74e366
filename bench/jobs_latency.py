"""Generation latency of the studio server while a training job runs, beside the same server idle.

The server must stay responsive while a job trains: jobs run in worker processes at `nice` 10
(`ServerConfig.job_nice`), never in the serving process. This starts a server on a loopback port
(a random-weight GPT under GENCRAFT_HOME's runs, a dataset from the bundled corpus), times
sequential `/v1/completions` requests (32 new tokens, greedy) with no job, with a training job at
nice 10, and with the same job at nice 0 (what niceness buys), and prints each condition's p50/p95
latency beside the idle figure, with the job's own training speed.

    flock /tmp/gencraft-bench.lock .venv/bin/python bench/jobs_latency.py [--requests 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch


def make_run(home: Path) -> None:
    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.runs import save_weights, write_info
    from gencraft.tokenize import train_tokenizer

    text = (Path(__file__).resolve().parents[1] / "src/gencraft/assets/corpus/names.txt").read_text(encoding="utf-8")
    tok = train_tokenizer("char", [text])
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=4, n_head=4, n_embd=128))
    path = home / "runs" / "served"
    path.mkdir(parents=True)
    save_weights(m, path / "model.safetensors")
    tok.save(path / "tokenizer.json")
    write_info(path, {"kind": "gpt", "run_id": "served", "model": dataclasses.asdict(m.config),
                      "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
                      "data": {"sources": []}})


def serve(home: Path, nice: int):
    import uvicorn

    from gencraft.server import ServerConfig, create_app

    app = create_app(ServerConfig(auth=False, home=home, rate_per_minute=0, job_nice=nice, store=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def latencies(c: httpx.Client, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = c.post("/v1/completions", json={"model": "served", "prompt": "Once upon a time", "max_tokens": 32,
                                            "temperature": 0, "seed": i})
        r.raise_for_status()
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure(home: Path, nice: int | None, n: int) -> tuple[list[float], float | None]:
    server, thread, url = serve(home, nice or 0)
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            latencies(c, 3)  # load the model, warm the decode path
            if nice is None:
                return latencies(c, n), None
            job = c.post("/v1/gencraft/jobs", json={"kind": "train", "params": {
                "dataset": "corpus", "preset": "tiny", "set": {"max_iters": 1_000_000, "eval_interval": 1000}}}).json()
            while not (c.get(f"/v1/gencraft/jobs/{job['id']}").json().get("progress") or {}).get("step"):
                time.sleep(0.2)
            lat = latencies(c, n)
            rate = c.get(f"/v1/gencraft/jobs/{job['id']}").json()["progress"]["rate"]
            c.delete(f"/v1/gencraft/jobs/{job['id']}")
            return lat, rate
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        make_run(home)
        from gencraft.data import prepare

        assets = Path(__file__).resolve().parents[1] / "src/gencraft/assets/corpus"
        prepare([assets / "lore.jsonl"], home / "datasets" / "corpus", field="text",
                license="CC0-1.0")
        rows = []
        for label, nice in (("idle server", None), ("training job, nice 10 (default)", 10), ("training job, nice 0", 0)):
            lat, rate = measure(home, nice, args.requests)
            q = statistics.quantiles(lat, n=20)
            rows.append((label, statistics.median(lat), q[-1], rate))
    base = rows[0][1]
    print(f"{'condition':<34}{'p50 ms':>9}{'p95 ms':>9}{'p50 vs idle':>13}{'job tok/s':>11}")
    for label, p50, p95, rate in rows:
        print(f"{label:<34}{p50:>9.1f}{p95:>9.1f}{p50 / base:>12.2f}x{(f'{rate:,.0f}' if rate else '-'):>11}")
    print(f"({args.requests} sequential /v1/completions, 32 new tokens, 4-layer 128-wide GPT; {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
