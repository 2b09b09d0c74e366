"""The GPU check's steps, one process each (``bench/gpu_check.sh`` runs them; read that first).

    python bench/gpu_check.py STEP --device cuda --work DIR [--out DIR] [--text FILE]

Steps: ``env`` (versions, the device, what imports), ``train`` (GPT training tok/s, bf16 autocast
beside float32), ``generate`` (decoding tok/s, batch 1 and batched, beside transformers on the same
device and weights), ``image`` (DCGAN training img/s on sklearn digits), ``serve`` (``gencraft serve
--device`` answering completions, then 16 streaming clients), ``compile`` (the 124M-shape training
step under ``torch.compile``). Each prints its figures as lines starting with its name and appends
them as JSON to ``OUT/results.jsonl``. On ``--device cpu`` every size shrinks to a dry run that
proves the plumbing on a machine without a GPU (figures meaningless there; ``compile`` is left out of
the CPU run by default: compiling for a 2-core CPU takes minutes).
"""

from __future__ import annotations  # noqa: I001 (gencraft is imported first on purpose)
# ruff: noqa: E402 (the imports below must follow the thread policy chosen before torch loads)

import gencraft  # noqa: F401  (first: sets the thread-pool wait policies before torch/numpy load)

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # bench/generate.py and bench/serve.py: their models and clients

# Sizes per device. On CUDA: what fills an H200 well enough to say something in seconds; on the CPU
# the smallest thing that runs every code path (a dry run).
SIZES = {
    "cuda": dict(small_batch=64, small_iters=300, big_batch=32, big_block=256, big_iters=60, compile_iters=80,
                 gen_shapes=("13.8M", "124M"), gen_batch=32, gen_reps=3, img_steps=(300, 150), img_batches=(64, 512),
                 serve_clients=16, serve_seconds=10.0),
    "cpu": dict(small_batch=8, small_iters=20, big_batch=4, big_block=64, big_iters=6, compile_iters=4,
                gen_shapes=("1.85M",), gen_batch=4, gen_reps=1, img_steps=(20, 10), img_batches=(16, 32),
                serve_clients=2, serve_seconds=2.0),
}
BIG = dict(n_layer=12, n_head=12, n_embd=768)  # GPT-2 small's blocks (a character vocabulary)
BIG_CPU = dict(n_layer=2, n_head=2, n_embd=64)


class Step:
    """Prints a step's lines and keeps its figures for ``results.jsonl``."""

    def __init__(self, name: str, out: Path | None) -> None:
        self.name, self.out, self.figures = name, out, {}

    def line(self, text: str, **figures) -> None:
        print(f"{self.name}: {text}", flush=True)
        self.figures.update(figures)

    def save(self) -> None:
        if self.out is not None:
            with open(self.out / "results.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": self.name, **self.figures}) + "\n")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best_time(fn, dev: torch.device, reps: int) -> float:
    """Seconds of the fastest of ``reps`` runs of ``fn`` after one warm-up."""
    fn()
    sync(dev)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return min(times)


def text_corpus(path: Path | None) -> str:
    """tinyshakespeare when given or found; else the corpus bundled with gencraft, repeated."""
    for p in (path, ROOT / ".whl" / "data" / "tinyshakespeare.txt", Path("/work/shared/data/tinyshakespeare.txt")):
        if p is not None and p.is_file():
            return p.read_text(encoding="utf-8")
    lines = []
    for f in sorted((ROOT / "src" / "gencraft" / "assets" / "corpus").glob("*.jsonl")):
        for raw in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(raw)
            lines.append(" ".join(str(v) for v in rec.values() if isinstance(v, str)))
    return ("\n".join(lines) + "\n") * 10


# ---- steps ------------------------------------------------------------------------------------

def step_env(s: Step, dev: torch.device, args) -> None:
    import importlib

    cuda = torch.version.cuda or "none"
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        where = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs), bf16 " \
                f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}"
    else:
        where = f"CPU ({os.cpu_count()} cores; dry run: figures say nothing about a GPU)"
    missing = []
    for mod in ("gencraft.cli", "gencraft.server", "gencraft.train.image", "gencraft.generate", "transformers",
                "uvicorn", "httpx", "sklearn"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            missing.append(f"{mod} ({e.name})")
    s.line(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {cuda}), {where}",
           python=sys.version.split()[0], torch=torch.__version__, cuda=cuda, device=where)
    if missing:
        s.line(f"cannot import {', '.join(missing)}: carry them as wheels (bench/gpu_wheels.sh)", missing=missing)
        raise SystemExit(1)
    s.line("gencraft and its server import")


def _metrics(run: Path) -> tuple[float, float | None]:
    """Median training tok/s of a run's log records after the first (warm-up, compilation), and its
    last validation loss."""
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    tps = [r["tokens_per_s"] for r in recs if r.get("split") == "train"]
    val = [r["loss"] for r in recs if r.get("split") == "val"]
    return statistics.median(tps[1:] or tps), (val[-1] if val else None)


def _char_dataset(args) -> str:
    from gencraft.data.prepare import prepare

    src = args.work / "corpus.txt"
    if not src.exists():
        src.write_text(text_corpus(args.text), encoding="utf-8")
    ds = args.work / "datasets" / "chars"
    if not (ds / "manifest.json").exists():
        prepare([str(src)], out=str(ds), tokenizer="char")
    return str(ds)


def _train(ds: str, out: Path, dev: torch.device, sets: dict, preset: str = "small") -> tuple[float, float | None, float]:
    from gencraft.train.loop import train

    t = time.perf_counter()
    train(ds, model="gpt", preset=preset, out=str(out), device=dev.type, progress=False,
          overrides=[f"{k}={v}" for k, v in sets.items()])
    wall = time.perf_counter() - t
    tps, val = _metrics(out)
    return tps, val, wall


def step_train(s: Step, dev: torch.device, args) -> None:
    z = SIZES[dev.type]
    ds = _char_dataset(args)
    small = dict(batch_size=z["small_batch"], max_iters=z["small_iters"], eval_interval=z["small_iters"],
                 eval_iters=10, dtype="bfloat16" if dev.type == "cuda" else "auto")
    tps, val, wall = _train(ds, args.work / "runs" / "small", dev, small)
    s.line(f"gpt small preset (4L/4H/192, ctx 128), batch {z['small_batch']}, {small['dtype']}: {tps:,.0f} tok/s, "
           f"val loss {val:.3f} after {z['small_iters']} steps ({wall:.0f} s with set-up and evaluation)",
           small_tok_s=tps, small_val_loss=val)
    shape = BIG if dev.type == "cuda" else BIG_CPU
    rates = {}
    for dtype in ("bfloat16", "float32"):
        sets = dict(shape, block_size=z["big_block"], batch_size=z["big_batch"], max_iters=z["big_iters"],
                    eval_interval=z["big_iters"], eval_iters=4, dropout=0.0, dtype=dtype, warmup_iters=10)
        rates[dtype], _, _ = _train(ds, args.work / "runs" / f"big-{dtype}", dev, sets)
    name = "12L/12H/768 (GPT-2 small's blocks)" if dev.type == "cuda" else "2L/2H/64"
    s.line(f"gpt {name}, ctx {z['big_block']}, batch {z['big_batch']}: bf16 autocast {rates['bfloat16']:,.0f} tok/s "
           f"| float32 {rates['float32']:,.0f} tok/s | bf16 buys {rates['bfloat16'] / rates['float32']:.2f}x",
           big_bf16_tok_s=rates["bfloat16"], big_f32_tok_s=rates["float32"])


def step_compile(s: Step, dev: torch.device, args) -> None:
    z = SIZES[dev.type]
    ds = _char_dataset(args)
    shape = BIG if dev.type == "cuda" else BIG_CPU
    sets = dict(shape, block_size=z["big_block"], batch_size=z["big_batch"], max_iters=z["compile_iters"],
                eval_interval=z["compile_iters"], eval_iters=4, dropout=0.0, dtype="bfloat16", warmup_iters=10,
                compile=True)
    tps, _, wall = _train(ds, args.work / "runs" / "big-compiled", dev, sets)
    s.line(f"gpt {'12L/12H/768' if dev.type == 'cuda' else '2L/2H/64'} bf16 under torch.compile: {tps:,.0f} tok/s "
           f"after compiling ({wall:.0f} s in all, compilation included)", compiled_tok_s=tps, compile_wall_s=wall)


def step_generate(s: Step, dev: torch.device, args) -> None:
    import generate as gb  # bench/generate.py: the shapes, random-weight models and their transformers twins

    from gencraft.generate import GenerationConfig, generate
    from gencraft.tokenize import train_tokenizer

    z = SIZES[dev.type]
    reps = z["gen_reps"]
    tok = train_tokenizer("bpe", [text_corpus(args.text)[:100_000]], vocab_size=500)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, tok.vocab_size, (gb.PROMPT,), generator=g).tolist()
    prompts = [torch.randint(0, tok.vocab_size, (gb.PROMPT,), generator=g).tolist() for _ in range(z["gen_batch"])]
    greedy = GenerationConfig(max_new_tokens=gb.NEW, temperature=0, stop_at_eos=False)
    topk = GenerationConfig(max_new_tokens=gb.NEW, top_k=50, seed=0, stop_at_eos=False)
    first = GenerationConfig(max_new_tokens=1, temperature=0, stop_at_eos=False)
    for name in z["gen_shapes"]:
        m32 = gb.build(name)
        hf = gb.hf_twin(m32).to(dev)
        m32 = m32.to(dev)
        x = torch.tensor([prompt], device=dev)

        def hf_run(model=hf, x=x):
            with torch.inference_mode():
                model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=gb.NEW, min_new_tokens=gb.NEW,
                               do_sample=False)
        hf_rate = gb.NEW / best_time(hf_run, dev, reps)
        figures = {}
        for dtype in (torch.float32, torch.bfloat16):
            m = m32.to(dtype)  # in place: float32 first, then the same weights rounded to bf16
            one = gb.NEW / best_time(lambda m=m: generate(m, tok, [prompt], greedy), dev, reps)
            ttft = best_time(lambda m=m: generate(m, tok, [prompt], first), dev, reps)
            batched = len(prompts) * gb.NEW / best_time(lambda m=m: generate(m, tok, prompts, topk), dev, 1)
            key = "f32" if dtype == torch.float32 else "bf16"
            figures[key] = (one, ttft, batched)
            s.figures.update({f"{name}_{key}_tok_s": one, f"{name}_{key}_ttft_ms": ttft * 1000,
                              f"{name}_{key}_batched_tok_s": batched})
        f32, b16 = figures["f32"], figures["bf16"]
        s.line(f"{name} batch 1 (64-token prompt + 128 greedy): f32 {f32[0]:,.0f} tok/s, bf16 {b16[0]:,.0f} tok/s "
               f"| transformers f32, same weights and device: {hf_rate:,.0f} tok/s ({f32[0] / hf_rate:.1f}x) "
               f"| first token f32 {f32[1] * 1000:.1f} ms", **{f"{name}_hf_tok_s": hf_rate})
        s.line(f"{name} batched ({len(prompts)} prompts, top-k 50): f32 {f32[2]:,.0f} tok/s, bf16 {b16[2]:,.0f} tok/s")
        del m32, hf
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def _image_rate(run: Path) -> float:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    ips = [r["images_per_s"] for r in recs if r.get("split") == "train"]
    return ips[-1]  # images per second over the whole run so far (evaluation excluded: it comes last)


def step_image(s: Step, dev: torch.device, args) -> None:
    from gencraft.data.images import prepare_images
    from gencraft.train.image import train_image

    z = SIZES[dev.type]
    os.environ["GENCRAFT_HOME"] = str(args.work)
    prepare_images("sklearn:digits", size=16, out=str(args.work / "datasets" / "digits16"))
    for steps, batch in zip(z["img_steps"], z["img_batches"], strict=True):
        out = args.work / "runs" / f"dcgan-{batch}"
        t = time.perf_counter()
        info = train_image(str(args.work / "datasets" / "digits16"), "dcgan", out=str(out), preset="small",
                           steps=steps, device=str(dev),
                           overrides=[f"batch_size={batch}", f"eval_every={steps}", f"sample_every={steps}",
                                      f"log_every={max(steps // 5, 1)}"])
        wall = time.perf_counter() - t
        ips = _image_rate(out)
        fid = info["metrics"].get("fid", float("nan"))
        s.line(f"dcgan small on digits 16x16, batch {batch}: {ips:,.0f} img/s training ({steps} steps; "
               f"FID-proxy {fid:.3g} after them; {wall:.0f} s with the evaluation)", **{f"dcgan_b{batch}_img_s": ips})


def step_serve(s: Step, dev: torch.device, args) -> None:
    import asyncio

    import httpx
    import serve as sb  # bench/serve.py: its 10.7M GPT run, prompt and streaming clients

    z = SIZES[dev.type]
    home = args.work / "serve-home"
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # its model line goes to the log, not the summary
        prompt, eos = sb.make_run(home)
    port = sb.free_port()
    log = open(args.work / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gencraft", "serve", "--device", str(dev), "--no-auth",
                             "--port", str(port), "--rate", "0", "--no-store"],
                            env=dict(os.environ, GENCRAFT_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gencraft serve exited ({proc.returncode}): "
                                   + (args.work / "serve.log").read_text()[-500:])
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gencraft serve did not answer /health within 90 s")
            time.sleep(0.3)
        body = {"model": "gpt10m", "prompt": prompt, "max_tokens": 64, "temperature": 0, "logit_bias": {str(eos): -100}}
        httpx.post(url + "/v1/completions", json=body, timeout=300).raise_for_status()  # loads the model
        t = time.perf_counter()
        r = httpx.post(url + "/v1/completions", json=body, timeout=300)
        wall = time.perf_counter() - t
        r.raise_for_status()
        out = r.json()
        n = out["usage"]["completion_tokens"]
        s.line(f"completion on {dev.type}: {n} tokens in {wall * 1000:.0f} ms ({n / wall:,.0f} tok/s), "
               f"text {out['choices'][0]['text'][:30]!r}...", completion_ms=wall * 1000)
        c = z["serve_clients"]
        lv = asyncio.run(sb.level(url, c, z["serve_seconds"], prompt, eos, 1.0))
        s.line(f"{c} streaming clients (bench/serve.py's 6L/384 GPT, 64-token prompts, 128 new): sustained {lv['sustained']:,.0f} tok/s "
               f"(whole run {lv['tok_s']:,.0f}), "
               f"TTFT p50 {lv['ttft_p50'] * 1000:.0f} ms, p95 {lv['ttft_p95'] * 1000:.0f} ms, {lv['requests']} requests",
               clients=c, sustained_tok_s=lv["sustained"], ttft_p95_ms=lv["ttft_p95"] * 1000)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


STEPS = {"env": step_env, "train": step_train, "generate": step_generate, "image": step_image,
         "serve": step_serve, "compile": step_compile}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=list(STEPS))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (GENCRAFT_HOME of the runs)")
    ap.add_argument("--out", type=Path, default=None, help="append the figures to OUT/results.jsonl")
    ap.add_argument("--text", type=Path, default=None, help="training text (default: tinyshakespeare if found)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{args.step}: --device cuda: no CUDA device is available (torch {torch.__version__})", file=sys.stderr)
        raise SystemExit(2)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["GENCRAFT_HOME"] = str(args.work)
    dev = torch.device(args.device)
    s = Step(args.step, args.out)
    try:
        STEPS[args.step](s, dev, args)
    finally:
        s.save()


if __name__ == "__main__":
    main()
