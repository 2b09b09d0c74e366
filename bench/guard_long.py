"""`gencraft guard check` and `gencraft guard copies` on long inputs: time and peak memory, this
checkout beside an older one.

Two 5 MB inputs that used to cost the most (issue 18): one line of words with no punctuation (the
classifier scored it as one 5 MB sentence) and 5 MB of digits (they fold to letters, so every lexicon
pattern was tried at every position). Each is checked by a fresh ``gencraft guard check FILE --json``
and ``gencraft guard copies RUN FILE --json`` process of the old version (``git archive REV src``) and
of this checkout, taking turns; the best time and the peak resident memory of each are printed side by
side, with a one-line input as the baseline (what importing the guard costs before any checking). The
copy check runs against a tiny run trained here on tinyshakespeare (its copy index: the 1 MB corpus,
by character and by token).

    /work/wt/tools/quiet .venv/bin/python bench/guard_long.py [--old REV] [--old-copies REV] [--rounds 3] [--mb 5] [--repo DIR]

``--old`` defaults to the commit before moderation began streaming its input, ``--old-copies`` to the
commit before the copy check did.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hum songs of old kings and "
         "queens under silver moons").split()


def inputs(folder: Path, mb: float) -> dict[str, Path]:
    rng = random.Random(0)
    n = int(mb * 1e6)
    line, size = [], 0
    while size < n:
        w = rng.choice(WORDS)
        line.append(w)
        size += len(w) + 1
    files = {"one line of words": " ".join(line)[:n], "digits": "".join(rng.choice("0123456789") for _ in range(n)),
             "baseline (one short line)": "hello there"}
    out = {}
    for name, text in files.items():
        p = folder / (name.split()[0] + ".txt")
        p.write_text(text, encoding="utf-8")
        out[name] = p
    return out


def default_old(repo: Path, grep: str = "Moderation streams long inputs") -> str:
    rev = subprocess.run(["git", "-C", str(repo), "log", "--format=%H", "-1", "--grep", grep],
                         capture_output=True, text=True).stdout.strip()
    return f"{rev}^" if rev else "HEAD"


def train_run(home: Path, data: Path) -> Path:
    """A tiny run on tinyshakespeare (a few steps: only its copy index matters here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "GENCRAFT_HOME": str(home)}
    gc = [sys.executable, "-m", "gencraft"]
    subprocess.run([*gc, "data", "prepare", str(data / "tinyshakespeare.txt"), "--out", "shake", "--license",
                    "public-domain"], env=env, check=True, capture_output=True)
    subprocess.run([*gc, "train", "shake", "--preset", "tiny", "--out", "shake-tiny", "--set", "max_iters=2",
                    "--set", "eval_interval=2", "--set", "eval_iters=1"], env=env, check=True, capture_output=True)
    return home / "runs" / "shake-tiny"


def checkout(repo: Path, rev: str, folder: Path) -> Path:
    tar = subprocess.run(["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(folder, filter="data")
    return folder / "src"


def measure(src: Path, args: list[str], file: Path, home: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `gencraft guard ARGS... FILE --json` process."""
    env = {**os.environ, "PYTHONPATH": str(src), "GENCRAFT_HOME": str(home)}
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "gencraft", "guard", *args, str(file), "--json"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode not in (0, 1):
        sys.exit(f"{src}: guard {' '.join(args)} {file.name} failed ({p.returncode}): {err.strip()[-300:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=None, help="git revision for guard check (default: before moderation streamed)")
    ap.add_argument("--old-copies", default=None, help="git revision for guard copies (default: before it streamed)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--repo", type=Path, default=ROOT, help="the git checkout the old revisions are taken from")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("GENCRAFT_SHARED_DATA", "/work/shared/data")))
    args = ap.parse_args()
    olds = {"check": args.old or default_old(args.repo),
            "copies": args.old_copies or default_old(args.repo, "Copy check streams long inputs")}
    with tempfile.TemporaryDirectory(prefix="gencraft-guard-long-") as d:
        d = Path(d)
        files = inputs(d, args.mb)
        run = train_run(d / "home", args.data)
        commands = {"check": ["check"], "copies": ["copies", str(run)]}
        srcs = {rev: checkout(args.repo, rev, d / f"old-{i}") for i, rev in enumerate(dict.fromkeys(olds.values()))}
        best: dict[tuple[str, str, str], tuple[float, float]] = {}
        for r in range(args.rounds):
            for cmd, cargs in commands.items():
                versions = [("old", srcs[olds[cmd]]), ("new", ROOT / "src")]
                for name, file in files.items():
                    for vname, src in (versions if r % 2 == 0 else versions[::-1]):
                        wall, rss = measure(src, cargs, file, d / "home")
                        b = best.get((cmd, vname, name))
                        best[(cmd, vname, name)] = (min(wall, b[0]), max(rss, b[1])) if b else (wall, rss)
        print(f"gencraft guard check|copies --json, {args.mb:g} MB inputs, best of {args.rounds} rounds taking turns "
              "(time) and peak RSS; copies against a tiny tinyshakespeare run")
        print(f"{'command':<14}{'input':<28}{'old revision':>16}{'old s':>9}{'MB':>7}{'this checkout s':>18}{'MB':>7}")
        for cmd in commands:
            label = olds[cmd][:12] + ("^" if olds[cmd].endswith("^") else "")
            for name in files:
                (ow, orss), (nw, nrss) = best[(cmd, "old", name)], best[(cmd, "new", name)]
                print(f"{'guard ' + cmd:<14}{name:<28}{label:>16}{ow:>9.2f}{orss:>7.0f}{nw:>18.2f}{nrss:>7.0f}")


if __name__ == "__main__":
    main()
