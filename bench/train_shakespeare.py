"""Benchmark: char-level training on tinyshakespeare, side by side with nanoGPT's CPU figures.

    .venv/bin/python bench/train_shakespeare.py                 # everything
    .venv/bin/python bench/train_shakespeare.py --only nanogpt  # one piece: nanogpt | small | lstm | speed
    .venv/bin/python bench/train_shakespeare.py --only small --minutes 5

Pieces:
  nanogpt  nanoGPT's CPU baseline shape (4L/4H/128, ctx 64, batch 12, 2000 iters, lr 1e-3, no dropout)
  versus   the same shape side by side: nanoGPT's recipe in plain PyTorch (bench/nanogpt_ref.py, a fresh
           process, OMP_WAIT_POLICY=PASSIVE as gencraft runs) and gencraft, taking turns --rounds times
           (--iters steps, default 2000, nanoGPT's cosine schedule over them; round r seeds both with --seed + r):
           val loss (20-batch estimate and whole split), loop wall time, tokens/s and their ratio
  ladder   what each speed step buys: nanoGPT's recipe, + passive OpenMP waiters, + fused AdamW, + bf16
           autocast, + attention in float32 under it (bench/nanogpt_ref.py's knobs), then gencraft: threads
           splitting each op with ATen's GELU, + row threads, + the C GELU (as it ships)
           (--ladder-iters steps, default 500, --ladder-rounds turns, default 2)
  small    the `small` GPT preset within a wall-clock budget (--minutes, default 5)
  lstm     the `small` LSTM preset within the same budget
  speed    A/B of the speed knobs on CPU time per step (1 thread, interleaved): fp32 vs bf16
           autocast vs torch.compile, fused vs foreach AdamW, and 1 vs 2 threads with OpenMP
           waiters spinning vs sleeping (OMP_WAIT_POLICY=PASSIVE)

Options: --minutes M (budget of small/lstm), --iters N (fixed steps instead; versus: its steps),
--threads N, --rounds N (versus), --seed S (versus: round r seeds both sides with S + r),
--ref-omp-default (versus: the reference with spinning waiters),
--set key=value (extra overrides for small/lstm), --omp-active (leave OMP_WAIT_POLICY unset).

The dataset is prepared with gencraft's data pipeline (char tokenizer, validation = the last 10%
of the text, no dedupe: comparable with nanoGPT's split) when it is available.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if "--omp-active" not in sys.argv:  # before torch loads OpenMP: sleeping waiters (see RESULTS.md)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
else:  # libgomp's default spinning, said explicitly (importing gencraft would choose PASSIVE)
    os.environ.setdefault("GOMP_SPINCOUNT", "300000")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHAKESPEARE = Path(os.environ.get("GENCRAFT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "tinyshakespeare.txt"
if not SHAKESPEARE.is_file():
    SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")

NANOGPT_SHAPE = ["n_layer=4", "n_head=4", "n_embd=128", "block_size=64", "batch_size=12", "max_iters=2000",
                 "lr_decay_iters=2000", "learning_rate=1e-3", "min_lr=1e-4", "warmup_iters=100", "dropout=0.0",
                 "beta2=0.99", "weight_decay=0.1", "eval_interval=250", "eval_iters=20", "grad_clip=1.0"]

REFERENCE = {
    "nanogpt": {"val": 1.874, "time_s": 71.0, "tok_s": 22000, "target": "val <= 1.88 at >= 22k tok/s"},
    "small": {"val": 1.678, "time_s": 330.0, "tok_s": None, "target": "val <= 1.62 within 5 min"},
    "lstm": {"val": None, "time_s": None, "tok_s": None, "target": "(no reference)"},
}


def prepare_dataset(root: Path) -> Path:
    """tinyshakespeare as a gencraft dataset with nanoGPT's split: the whole file is one document,
    the first 90% of its characters train and the last 10% validation; char tokenizer; no dedupe."""
    from gencraft.data.prepare import prepare

    return Path(prepare([SHAKESPEARE], out=str(root / "shakespeare"), tokenizer="char", split="tail",
                        unit="file", dedupe=False, license="public-domain"))


def run_one(ds: Path, name: str, model: str, preset: str, overrides: list[str], max_time: float | None,
            home: Path) -> dict:
    from gencraft.train.evaluate import evaluate
    from gencraft.train.loop import train

    out = home / "runs" / name
    t0, c0 = time.time(), time.process_time()
    run = train(ds, model=model, preset=preset, out=str(out), overrides=overrides, max_time=max_time,
                progress=sys.stderr.isatty())
    wall, cpu = time.time() - t0, time.process_time() - c0
    info = json.loads((run / "gencraft.json").read_text())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tps = [e["tokens_per_s"] for e in events if e["split"] == "train"][1:]  # skip the warm-up window
    full = evaluate(run)
    m = info["metrics"]
    return {"name": name, "val": m["best_val_loss"], "val_full": full["loss"], "bpc": full["bpc"],
            "time_s": wall, "loop_s": m["train_time_s"], "tok_s": float(np.median(tps)) if tps else float("nan"), "steps": m["step"],
            "bf16": m.get("bf16"), "compile": info["train"]["compile"], "cpu_s": cpu,
            "tok_cpu_s": m["tokens_seen"] / cpu}


def row(r: dict, ref: dict) -> str:
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and v == v else "-"
    return (f"| {r['name']} | {f(r['val'], '.4f')} | {f(r['val_full'], '.4f')} | {f(r['time_s'], '.0f')} s | "
            f"{f(r['tok_s'], ',.0f')} | {f(r['cpu_s'], '.0f')} s | {f(r['tok_cpu_s'], ',.0f')} | {r['steps']} | {'bf16' if r['bf16'] else 'fp32'}"
            f"{'+compile' if r['compile'] else ''} | {f(ref['val'], '.3f')} | {f(ref['time_s'], '.0f')} | "
            f"{f(ref['tok_s'], ',.0f')} | {ref['target']} |")


HEADER = ("| run | val loss (eval) | val loss (whole split) | wall | train tok/s | CPU time | tok per CPU-s | steps | "
          "precision | nanoGPT val | nanoGPT s | nanoGPT tok/s | target |\n|" + " --- |" * 13)


def reference_run(ds: Path, passive: bool = False, iters: int = 2000, seed: int = 1337, knobs: tuple[str, ...] = (),
                  save: Path | None = None) -> dict:
    """bench/nanogpt_ref.py on the dataset's token files, in a fresh process whose environment is
    what a nanoGPT user's is (none of the OpenMP settings this script or gencraft make), or with
    ``passive``: OMP_WAIT_POLICY=PASSIVE, the one setting gencraft makes for every process.
    ``knobs``: extra speed steps of the reference ("fused", "bf16"); ``save``: with it the result has
    ``val_full``, the final weights' loss over the whole validation split (gencraft's ``split_loss``)."""
    import subprocess

    m = json.loads((ds / "manifest.json").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONPATH")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, str(Path(__file__).with_name("nanogpt_ref.py")), str(ds / "train.bin"), str(ds / "val.bin"),
           str(m["tokenizer"]["vocab_size"]), "--iters", str(iters), "--seed", str(seed), "--dtype", m["dtype"],
           *(f"--{k}" for k in knobs), *(["--save", str(save)] if save else [])]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if save:
        out["val_full"] = reference_val_full(save, ds, m["tokenizer"]["vocab_size"])
    return out


def reference_val_full(weights: Path, ds: Path, vocab: int) -> float:
    """The reference model's loss over the whole validation split, computed as gencraft's evaluation
    computes it (``train.evaluate.split_loss``: consecutive windows, every token predicted once)."""
    import torch
    from safetensors.torch import load_model

    from gencraft.train.data import load_dataset
    from gencraft.train.evaluate import split_loss

    sys.path.insert(0, str(Path(__file__).parent))
    import nanogpt_ref

    model = nanogpt_ref.GPT(vocab, 64, 4, 4, 128)
    load_model(model, weights)
    with torch.inference_mode():
        return split_loss(model.eval(), load_dataset(ds).val, 64)[0]


def gencraft_run(ds: Path, home: Path, name: str, iters: int, seed: int, extra: tuple[str, ...] = (),
                 env_extra: dict[str, str] | None = None) -> dict:
    """gencraft at nanoGPT's shape and schedule for ``iters`` steps, as its users run it: ``gencraft train``
    in a fresh process (as the reference runs), with this process's environment (OMP_WAIT_POLICY as
    chosen here) and ``env_extra``. Val losses, the training loop's wall time (``train_time_s``), tok/s."""
    import subprocess

    from gencraft.train.evaluate import evaluate

    shape = [o for o in NANOGPT_SHAPE if not o.startswith(("max_iters=", "lr_decay_iters="))]
    sets = [*shape, f"max_iters={iters}", f"lr_decay_iters={iters}", f"seed={seed}", *extra]
    env = dict(os.environ, GENCRAFT_HOME=str(home), PYTHONPATH=str(ROOT / "src"), **(env_extra or {}))
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "gencraft", "train", str(ds), "--model", "gpt", "--preset", "small",
                          "--out", name, "-q", *(a for o in sets for a in ("--set", o))],
                         env=env, capture_output=True, text=True)
    call = time.time() - t0
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    run = home / "runs" / name
    info = json.loads((run / "gencraft.json").read_text())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tps = [e["tokens_per_s"] for e in events if e["split"] == "train"][1:]  # skip the warm-up window
    m = info["metrics"]
    return {"val": m["best_val_loss"], "val_full": evaluate(run)["loss"], "time_s": m["train_time_s"],
            "tok_s": iters * 12 * 64 / m["train_time_s"], "bf16": m.get("bf16"), "call_s": call,
            "steps_tok_s": float(np.median(tps)) if tps else float("nan")}


def versus(ds: Path, home: Path, rounds: int, iters: int, omp_default: bool, first_seed: int = 1337) -> None:
    """nanoGPT's recipe (plain PyTorch, fp32) and gencraft on the same shape, steps, schedule and data,
    taking turns ``rounds`` times (round r: seed ``first_seed`` + r on both sides -- the same number, not the
    same random draws: each side initializes and samples its batches with its own code): tokens/s of the
    training loop (evaluations included) and validation loss (the 20-batch estimate and the whole split)."""
    rows = []
    ref_name = "nanoGPT recipe" + (" (OpenMP default)" if omp_default else " (OMP passive)")
    for r in range(rounds):
        seed = first_seed + r
        # by default passive OpenMP waiters for the reference too: with libgomp's default spinning, its 2 threads
        # on a shared 2-core machine took 0.47 CPU-s a step (60 steps in 187 s), a figure of the shared machine
        runs = {ref_name: reference_run(ds, passive=not omp_default, iters=iters, seed=seed,
                                        save=home / f"ref-{r}.safetensors")}
        ours = gencraft_run(ds, home, f"versus-{r}", iters, seed)
        runs[f"gencraft ({'bf16' if ours['bf16'] else 'fp32'})"] = ours
        rows.append((r + 1, seed, os.getloadavg()[0], runs))
        print(f"round {r + 1} (seed {seed}): " + "; ".join(
            f"{k} val {v['val']:.4f} / whole split {v['val_full']:.4f} in {v['time_s']:.0f} s ({v['tok_s']:,.0f} tok/s)"
            for k, v in runs.items()) + f"; gencraft between evaluations (median of its log windows) "
            f"{ours['steps_tok_s']:,.0f} tok/s, its train() call {ours['call_s']:.0f} s", flush=True)
    print(f"\n| round (seed, load average after) | run | val loss, 20-batch eval | val loss, whole split "
          f"| loop wall, {iters} steps | tok/s | gencraft / this |\n|" + " --- |" * 7)
    ratios = []
    for r, seed, load, runs in rows:
        ours = [v for k, v in runs.items() if k.startswith("gencraft")][0]
        ratios.append(ours["tok_s"] / runs[ref_name]["tok_s"])
        for k, v in runs.items():
            print(f"| {r} ({seed}, {load:.1f}) | {k} | {v['val']:.4f} | {v['val_full']:.4f} | {v['time_s']:.0f} s "
                  f"| {v['tok_s']:,.0f} | {ours['tok_s'] / v['tok_s']:.2f}x |")
    import statistics

    print(f"gencraft / nanoGPT recipe, tok/s: median {statistics.median(ratios):.2f}x over {rounds} rounds "
          f"({', '.join(f'{x:.2f}x' for x in ratios)}); aim: >= 1.5x at equal validation loss (<= 1.88)")


# gencraft's own steps on the ladder: (label, --set overrides, environment). GENCRAFT_NATIVE=0 turns the C
# kernels off (training's GELU; the decode step too, which training does not use).
GENCRAFT_STEPS: list[tuple[str, tuple[str, ...], dict[str, str]]] = [
    ("gencraft train (its model and loop: bf16 with float32 attention, fused AdamW, passive waiters; "
     "threads split each op, ATen's GELU)", ("parallel=ops",), {"GENCRAFT_NATIVE": "0"}),
    ("+ row threads (each thread runs whole passes on its share of the batch)", ("parallel=rows",),
     {"GENCRAFT_NATIVE": "0"}),
    ("+ tanh GELU in C (gencraft train as it ships)", (), {}),
]


def ladder(ds: Path, home: Path, iters: int, rounds: int) -> None:
    """What each speed step buys: nanoGPT's recipe, then one knob more at a time, then gencraft, all at
    the same shape, steps, schedule and seed (the same computation: the val loss moves only with bf16),
    in fresh processes, the whole ladder repeated ``rounds`` times taking turns; the best round per step."""
    steps: list[tuple[str, dict]] = [
        ("nanoGPT recipe (fp32, foreach AdamW, OpenMP default: spinning waiters)", {}),
        ("+ OMP_WAIT_POLICY=PASSIVE", {"passive": True}),
        ("+ fused AdamW", {"passive": True, "knobs": ("fused",)}),
        ("+ bf16 autocast", {"passive": True, "knobs": ("fused", "bf16")}),
        ("+ attention in float32 under autocast", {"passive": True, "knobs": ("fused", "bf16", "attn-fp32")}),
    ]
    best: dict[str, dict] = {}
    for r in range(rounds):
        for label, kw in steps:
            res = reference_run(ds, iters=iters, **kw)
            if label not in best or res["tok_s"] > best[label]["tok_s"]:
                best[label] = res
        for i, (label, extra, env) in enumerate(GENCRAFT_STEPS):
            res = gencraft_run(ds, home, f"ladder-{r}-{i}", iters, 1337, extra, env)
            if label not in best or res["tok_s"] > best[label]["tok_s"]:
                best[label] = res
        print(f"ladder round {r + 1}: " + ", ".join(f"{v['tok_s']:,.0f}" for v in best.values())
              + f" tok/s; gencraft between evaluations {res['steps_tok_s']:,.0f} tok/s"
              f" (load average {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n| step ({iters} steps, loop wall, best of {rounds}) | tok/s | vs the step before | vs nanoGPT recipe "
          "| val loss (20-batch) |\n|" + " --- |" * 5)
    prev = base = None
    for label, v in best.items():
        base = base or v["tok_s"]
        print(f"| {label} | {v['tok_s']:,.0f} | {v['tok_s'] / (prev or v['tok_s']):.2f}x | {v['tok_s'] / base:.2f}x "
              f"| {v['val']:.4f} |", flush=True)
        prev = v["tok_s"]


def _cpu_per_step(net, opt, x, y, bf16: bool, n: int) -> float:
    """CPU seconds per training step (process time: robust to other processes sharing the CPU)."""
    import torch

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    t0 = time.process_time()
    for _ in range(n):
        with ctx:
            _, loss = net(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.process_time() - t0) / n


def speed_ab() -> None:
    """What each speed knob buys, measured as CPU time per step on one thread, A/B interleaved.

    Wall-clock tokens/s swing by 10x on a shared CPU; process CPU time on one thread does not,
    so the variants are compared on it (5 interleaved rounds, median).
    """
    import statistics

    import torch

    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.models.lstm import LSTMLM, LSTMConfig

    torch.set_num_threads(1)
    shapes = [("gpt nanoGPT shape 4L/128/ctx64, B12", GPT(GPTConfig(66, 64, 4, 4, 128)), 12, 64, True),
              ("gpt small 4L/192/ctx128, B16", GPT(GPTConfig(66, 128, 4, 4, 192)), 16, 128, True),
              ("lstm small 2x512/ctx128, B32", LSTMLM(LSTMConfig(66, 128, 192, 512, 2, 0.1)), 32, 128, False)]
    print("\n| shape | variant | CPU ms/step (1 thread) | tok per CPU-s | vs fp32 eager |\n| --- | --- | --- | --- | --- |")
    for label, model, B, T, try_compile in shapes:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        x, y = torch.randint(0, 66, (B, T)), torch.randint(0, 66, (B, T))
        variants = [("fp32 eager", model, False), ("bf16 autocast", model, True)]
        if try_compile:
            compiled = torch.compile(model)
            for bf16 in (False, True):  # compile outside the measurement
                t0 = time.time()
                _cpu_per_step(compiled, opt, x, y, bf16, 2)
                print(f"| {label} | torch.compile warm-up ({'bf16' if bf16 else 'fp32'}) | {time.time() - t0:.1f} s wall | | |")
            variants += [("fp32 + compile", compiled, False), ("bf16 + compile", compiled, True)]
        n = 3 if "lstm" in label else 8
        for _, net, bf16 in variants:
            _cpu_per_step(net, opt, x, y, bf16, 1)
        times: dict[str, list[float]] = {v[0]: [] for v in variants}
        for _ in range(5 if "lstm" not in label else 3):
            for name, net, bf16 in variants:
                times[name].append(_cpu_per_step(net, opt, x, y, bf16, n))
        base = statistics.median(times["fp32 eager"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {label} | {name} | {med * 1e3:.1f} | {B * T / med:,.0f} | {base / med:.2f}x |", flush=True)
    _optimizer_ab()
    _threads_ab()


def _threads_ab() -> None:
    """Wall tokens/s with 1 and 2 threads, OpenMP waiters spinning (default) vs sleeping (PASSIVE).

    Each configuration in a fresh process (OpenMP reads OMP_WAIT_POLICY when torch loads).
    """
    import subprocess

    code = (
        "import time, torch\n"
        "from gencraft.models.gpt import GPT, GPTConfig\n"
        "m = GPT(GPTConfig(66, 64, 4, 4, 128)); opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)\n"
        "x = torch.randint(0, 66, (12, 64)); y = torch.randint(0, 66, (12, 64))\n"
        "out = []\n"
        "for th in (1, 2, 1, 2):\n"
        "    torch.set_num_threads(th); t0 = time.time()\n"
        "    for _ in range(10):\n"
        "        with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "            _, loss = m(x, y)\n"
        "        loss.backward(); opt.step(); opt.zero_grad()\n"
        "    out.append(10 * 768 / (time.time() - t0))\n"
        "print(max(out[0], out[2]), max(out[1], out[3]))\n"
    )
    print("\n| OMP_WAIT_POLICY | 1 thread tok/s | 2 threads tok/s | load average |\n| --- | --- | --- | --- |")
    for _ in range(2):
        for policy in ("(unset: spin)", "PASSIVE"):
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            if policy == "PASSIVE":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            else:  # libgomp's default; set explicitly, or importing gencraft would choose PASSIVE
                env["GOMP_SPINCOUNT"] = "300000"
            env["PYTHONPATH"] = str(ROOT / "src")
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if res.returncode:
                print(res.stderr[-500:])
                continue
            one, two = map(float, res.stdout.split())
            print(f"| {policy} | {one:,.0f} | {two:,.0f} | {os.getloadavg()[0]:.1f} |", flush=True)


def _optimizer_ab(steps: int = 200) -> None:
    """AdamW step time on the nanoGPT-shape parameters: fused vs foreach vs for-loop."""
    import torch

    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.train.optim import param_groups

    model = GPT(GPTConfig(vocab_size=66, block_size=64, n_layer=4, n_head=4, n_embd=128))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    print("\n| AdamW variant | ms per step |\n| --- | --- |")
    for label, kw in (("fused", dict(fused=True)), ("foreach", dict(foreach=True)), ("for-loop", dict(foreach=False))):
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, **kw)
        for _ in range(10):
            opt.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        print(f"| {label} | {(time.perf_counter() - t0) / steps * 1e3:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["nanogpt", "versus", "ladder", "small", "lstm", "speed"], action="append")
    ap.add_argument("--rounds", type=int, default=1, help="versus: turns of each")
    ap.add_argument("--ladder-iters", type=int, default=500, help="ladder: steps of each run")
    ap.add_argument("--ladder-rounds", type=int, default=2, help="ladder: turns of the whole ladder")
    ap.add_argument("--seed", type=int, default=1337, help="versus: the first round's seed (round r: seed + r)")
    ap.add_argument("--ref-omp-default", action="store_true",
                    help="versus: run the nanoGPT recipe with libgomp's default (spinning) waiters, not PASSIVE")
    ap.add_argument("--minutes", type=float, default=5.0, help="budget for the small presets")
    ap.add_argument("--iters", type=int, default=0,
                    help="small/lstm: a fixed number of steps (step-based schedule) instead of the --minutes budget")
    ap.add_argument("--omp-active", action="store_true", help="leave OMP_WAIT_POLICY unset (spinning waiters)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra key=value for small/lstm")
    args = ap.parse_args()
    pieces = args.only or ["nanogpt", "small", "lstm"]
    import torch

    if args.threads:
        NANOGPT_SHAPE.append(f"num_threads={args.threads}")
        args.sets.append(f"num_threads={args.threads}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f} (the CPU is shared: figures are under contention)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["GENCRAFT_HOME"] = str(home)
        ds = prepare_dataset(home / "datasets")
        results = []
        budget = f"max_iters={args.iters or 100000}"
        limit = None if args.iters else args.minutes * 60
        if "speed" in pieces:
            speed_ab()
        if "ladder" in pieces:
            ladder(ds, home, args.ladder_iters, args.ladder_rounds)
        if "versus" in pieces:
            versus(ds, home, args.rounds, args.iters or 2000, args.ref_omp_default, args.seed)
        if "nanogpt" in pieces:
            results.append(("nanogpt", run_one(ds, "nanogpt-shape", "gpt", "small", NANOGPT_SHAPE, None, home)))
            print(HEADER + "\n" + row(results[-1][1], REFERENCE["nanogpt"]), flush=True)
        if "small" in pieces:
            results.append(("small", run_one(ds, "gpt-small", "gpt", "small", [budget, *args.sets], limit, home)))
            print(HEADER + "\n" + row(results[-1][1], REFERENCE["small"]), flush=True)
        if "lstm" in pieces:
            results.append(("lstm", run_one(ds, "lstm-small", "lstm", "small", [budget, *args.sets], limit, home)))
            print(HEADER + "\n" + row(results[-1][1], REFERENCE["lstm"]), flush=True)
        if results:
            print(f"\nall results (load average now {os.getloadavg()[0]:.2f}):")
            print(HEADER)
            for key, r in results:
                print(row(r, REFERENCE[key]))


if __name__ == "__main__":
    main()
