"""Benchmark: what a SIGKILL at a random moment costs a training run, and that --resume recovers it.

A GPT run on tinyshakespeare is started with ``gencraft train`` and killed with SIGKILL at a random
moment between ``--min`` and ``--max`` seconds after its process started (default 5 s to 3 min),
then resumed with ``--resume`` and killed again, ``--kills`` times in all (default 20); a run that
reaches ``--iters`` before the next kill is followed by a fresh one (same configuration and seed), and
the last one runs to the end after the last kill. For every kill it prints:

- the training time lost: from the last checkpoint written (``checkpoints/last/state.json``), or from
  the moment this session began training when it wrote none (``RUN/training.json``'s ``started``), to
  the kill; ``--checkpoint-every`` bounds it. The session's start-up before training (importing
  torch, loading the data and the checkpoint) is printed beside it: a kill then costs that time, no work;
- whether the run directory was still usable: its checkpoint readable (``--resume`` works) and, once
  it has evaluated weights, ``gencraft.json`` and ``model.safetensors`` loadable (digest checked).

Meanwhile it trains the same configuration once without interruption, and prints every crashed run's
best validation loss beside it (resuming restores the optimizer, the schedule, every RNG and the data
position, so they agree to the last digit unless the hardware's float reductions differ).

    flock /tmp/gencraft-bench.lock .venv/bin/python bench/crash.py              # 20 kills (45-60 min)
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


def training_started(run: Path, process_started: float) -> float | None:
    """When this session began training (its ``training.json`` mark), or None if it never did."""
    try:
        began = float(json.loads((run / "training.json").read_text())["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return began if began >= process_started - 1.0 else None  # an older session's mark: this one never began


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
    ap.add_argument("--iters", type=int, default=12000)
    ap.add_argument("--eval-interval", type=int, default=2000)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="gencraft-crash-")) if args.keep is None else args.keep
    home = tmp / "home"
    from gencraft.data import prepare

    ds = prepare([corpus(tmp)], home / "datasets" / "shake", license="public domain", split="tail", dedupe=False)
    print(f"gencraft train {ds.name} --preset {args.preset} --set max_iters={args.iters} --checkpoint-every "
          f"{args.every:g}; {args.kills} SIGKILLs at random moments {args.min:g}-{args.max:g} s after each start")
    # the uninterrupted reference trains meanwhile (same configuration and seed): each crashed run must end
    # at its final loss; a crashed run that reaches max_iters before all the kills came is followed by another
    straight = subprocess.Popen(train_cmd(ds, "straight", args, False), env=env(home), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    print(f"{'kill':>4} {'run':>4} {'after s':>8} {'startup s':>9} {'ckpt step':>9} {'lost s':>7}  run directory")
    lost_all, startups, unusable, resume, finished, kills_per_run = [], [], 0, False, [], {}
    kills, n_run = 0, 1
    t_total = time.time()
    while kills < args.kills:
        run = home / "runs" / f"crashed-{n_run}"
        p = subprocess.Popen(train_cmd(ds, run.name, args, resume), env=env(home),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.time()
        wait = rng.uniform(args.min, args.max)
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        if p.returncode is not None:  # it finished (or failed) before the kill came: the next kill is another run's
            err = p.stderr.read() if p.stderr else ""
            if p.returncode != 0:
                sys.exit(f"training failed before kill {kills + 1}: {err.strip()[-500:]}")
            finished.append(run)
            n_run, resume = n_run + 1, False
            continue
        killed_at = time.time()
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        kills_per_run[run.name] = kills_per_run.get(run.name, 0) + 1
        step, mtime = checkpoint_info(run)
        last_save = mtime if mtime is not None and mtime >= started else None
        began = training_started(run, started)
        # what is lost: the training since the last save of this session, or since it began training
        # (the previous session's checkpoint is then still the one to resume from); none if it never began
        lost = killed_at - (last_save or began) if began is not None else 0.0
        startup = (began if began is not None else killed_at) - started
        lost_all.append(lost)
        startups.append(startup)
        state = usable(run)
        unusable += state != "ok"
        print(f"{kills:>4} {n_run:>4} {killed_at - started:>8.1f} {startup:>9.1f} {step if step is not None else '-':>9} "
              f"{lost:>7.1f}  {state}", flush=True)
        resume = step is not None
    p = subprocess.run(train_cmd(ds, run.name, args, resume), env=env(home), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"the final resume failed: {p.stderr.strip()[-500:]}")
    finished.append(run)
    t_crashed = time.time() - t_total
    if straight.wait() != 0:
        sys.exit(f"the uninterrupted run failed: {straight.stderr.read().strip()[-500:]}")
    b = json.loads((home / "runs" / "straight" / "gencraft.json").read_text())["metrics"]
    lost_all.sort()
    print()
    startups.sort()
    print(f"training lost per kill: median {lost_all[len(lost_all) // 2]:.1f} s, max {lost_all[-1]:.1f} s "
          f"(checkpoint every {args.every:g} s or {args.eval_interval} steps); start-up of a session: median "
          f"{startups[len(startups) // 2]:.1f} s, max {startups[-1]:.1f} s; unusable run directories: {unusable}")
    print(f"wall time of the {kills} kills and resumes: {t_crashed:.0f} s")
    print(f"{'run':<12}{'kills':>6}{'final step':>12}{'best val loss':>15}")
    for r in finished:
        m = json.loads((r / "gencraft.json").read_text())["metrics"]
        print(f"{r.name:<12}{kills_per_run.get(r.name, 0):>6}{m['step']:>12}{m['best_val_loss']:>15.5f}")
    print(f"{'straight':<12}{0:>6}{b['step']:>12}{b['best_val_loss']:>15.5f}")


if __name__ == "__main__":
    main()
