"""Benchmark: what a SIGKILL at a random moment costs a training run, and that --resume recovers it.

One GPT run on tinyshakespeare is started with ``gencraft train`` and killed with SIGKILL
``--kills`` times (default 20), each time at a random moment between ``--min`` and ``--max``
seconds after its process started (default 5 s to 3 min), then resumed with ``--resume``; after the
last kill it runs to the end. For every kill it prints:

- the wall time lost: from the last checkpoint written (``checkpoints/last/state.json``) to the kill,
  which ``--checkpoint-every`` bounds (plus the start-up of the process when no checkpoint came yet);
- whether the run directory was still usable: its checkpoint readable (``--resume`` works) and, once
  it has evaluated weights, ``gencraft.json`` and ``model.safetensors`` loadable (digest checked).

Then it trains the same configuration once without interruption and prints both final validation
losses side by side (resuming restores the optimizer, the schedule, every RNG and the data position,
so they agree to the last digit unless the hardware's float reductions differ).

    flock /tmp/gencraft-bench.lock .venv/bin/python bench/crash.py              # 20 kills (about an hour)
    .venv/bin/python bench/crash.py --kills 3 --min 5 --max 20 --iters 1500     # a quick look

Options: --kills N, --min S, --max S, --every S (--checkpoint-every, default 30 s), --iters N,
--preset P, --seed N (the kill moments), --keep DIR (keep the runs there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHAKESPEARE = [Path("/work/shared/data/tinyshakespeare.txt"), ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"]


def corpus(tmp: Path) -> Path:
    for p in SHAKESPEARE:
        if p.is_file():
            return p
    # no shared data here: a small learnable stand-in (gencraft's bundled corpus)
    from importlib import resources

    text = "\n\n".join(f.read_text(encoding="utf-8") for f in resources.files("gencraft.assets").joinpath("corpus").iterdir()
                       if f.name.endswith((".txt", ".jsonl")))
    out = tmp / "corpus.txt"
    out.write_text(text, encoding="utf-8")
    return out


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "GENCRAFT_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}


def train_cmd(ds: Path, out: str, args: argparse.Namespace, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "gencraft", "train", str(ds), "--out", out, "--preset", args.preset, "-q",
           "--checkpoint-every", str(args.every), "--seed", "1337", "--set", f"max_iters={args.iters}",
           "--set", f"eval_interval={args.eval_interval}", "--set", "num_threads=1"]
    return cmd + (["--resume"] if resume else [])


def checkpoint_info(run: Path) -> tuple[int | None, float | None]:
    f = run / "checkpoints" / "last" / "state.json"
    try:
        return json.loads(f.read_text())["step"], f.stat().st_mtime
    except (OSError, ValueError, KeyError):
        return None, None


def usable(run: Path) -> str:
    """'ok' when the checkpoint reads and (if present) the run loads; else what is wrong."""
    from gencraft.errors import GencraftError
    from gencraft.runs import load_model
    from gencraft.train.checkpoint import read_checkpoint_state

    try:
        if (run / "checkpoints" / "last").exists() or (run / "checkpoints" / ".last.old").exists():
            read_checkpoint_state(run)
        if (run / "gencraft.json").is_file():
            load_model(run)
    except GencraftError as e:
        return f"NOT usable: {e}"
    return "ok"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--min", type=float, default=5.0)
    ap.add_argument("--max", type=float, default=180.0)
    ap.add_argument("--every", type=float, default=30.0, help="--checkpoint-every of the runs (seconds)")
    ap.add_argument("--iters", type=int, default=30000)
    ap.add_argument("--eval-interval", type=int, default=2500)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="gencraft-crash-")) if args.keep is None else args.keep
    home = tmp / "home"
    from gencraft.data import prepare

    ds = prepare([corpus(tmp)], home / "datasets" / "shake", license="public domain", split="tail", dedupe=False)
    run = home / "runs" / "crashed"
    print(f"gencraft train {ds.name} --preset {args.preset} --set max_iters={args.iters} --checkpoint-every "
          f"{args.every:g}; {args.kills} SIGKILLs at random moments {args.min:g}-{args.max:g} s after each start")
    print(f"{'kill':>4} {'after s':>8} {'step':>7} {'ckpt step':>9} {'lost s':>7}  run directory")
    lost_all, unusable, resume = [], 0, False
    kills = 0
    t_total = time.time()
    while kills < args.kills:
        p = subprocess.Popen(train_cmd(ds, "crashed", args, resume), env=env(home),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.time()
        wait = rng.uniform(args.min, args.max)
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        if p.returncode is not None:  # it finished (or failed) before the kill came
            err = p.stderr.read() if p.stderr else ""
            if p.returncode != 0:
                sys.exit(f"training failed before kill {kills + 1}: {err.strip()[-500:]}")
            print(f"the run finished after {kills} kills; raise --iters to kill it {args.kills} times")
            break
        killed_at = time.time()
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        step, mtime = checkpoint_info(run)
        last_save = mtime if mtime is not None and mtime >= started else None
        # what is lost: the work since the last save of this process (or since it started, when it saved none:
        # then the previous session's checkpoint is still the one to resume from)
        lost = killed_at - (last_save if last_save is not None else started)
        lost_all.append(lost)
        state = usable(run)
        unusable += state != "ok"
        print(f"{kills:>4} {killed_at - started:>8.1f} {'':>7} {step if step is not None else '-':>9} {lost:>7.1f}  {state}")
        resume = step is not None
    p = subprocess.run(train_cmd(ds, "crashed", args, resume), env=env(home), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"the final resume failed: {p.stderr.strip()[-500:]}")
    t_crashed = time.time() - t_total
    t0 = time.time()
    p = subprocess.run(train_cmd(ds, "straight", args, False), env=env(home), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"the uninterrupted run failed: {p.stderr.strip()[-500:]}")
    t_straight = time.time() - t0
    a = json.loads((run / "gencraft.json").read_text())["metrics"]
    b = json.loads((home / "runs" / "straight" / "gencraft.json").read_text())["metrics"]
    lost_all.sort()
    print()
    print(f"lost per kill: median {lost_all[len(lost_all) // 2]:.1f} s, max {lost_all[-1]:.1f} s "
          f"(checkpoint every {args.every:g} s or {args.eval_interval} steps); unusable run directories: {unusable}")
    print(f"{'':<28}{'killed ' + str(kills) + 'x + resumed':>22}{'uninterrupted':>16}")
    print(f"{'final step':<28}{a['step']:>22}{b['step']:>16}")
    print(f"{'best val loss':<28}{a['best_val_loss']:>22.5f}{b['best_val_loss']:>16.5f}")
    print(f"{'wall time (s)':<28}{t_crashed:>22.0f}{t_straight:>16.0f}")


if __name__ == "__main__":
    main()
