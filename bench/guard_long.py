"""`gencraft guard check` on long inputs: time and peak memory, this checkout beside an older one.

Two 5 MB inputs that used to cost the most (issue 18): one line of words with no punctuation (the
classifier scored it as one 5 MB sentence) and 5 MB of digits (they fold to letters, so every lexicon
pattern was tried at every position). Each is checked by a fresh ``gencraft guard check FILE --json``
process of the old version (``git archive REV src``) and of this checkout, taking turns; the best time
and the peak resident memory of each are printed side by side, with a one-line input as the baseline
(what importing the guard costs before any checking).

    flock /tmp/gencraft-bench.lock .venv/bin/python bench/guard_long.py [--old REV] [--rounds 3] [--mb 5] [--repo DIR]

``--old`` defaults to the commit before moderation began streaming its input.
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


def default_old(repo: Path) -> str:
    rev = subprocess.run(["git", "-C", str(repo), "log", "--format=%H", "-1", "--grep", "Moderation streams long inputs"],
                         capture_output=True, text=True).stdout.strip()
    return f"{rev}^" if rev else "HEAD"


def checkout(repo: Path, rev: str, folder: Path) -> Path:
    tar = subprocess.run(["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(folder, filter="data")
    return folder / "src"


def measure(src: Path, file: Path, home: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `gencraft guard check FILE --json` process."""
    env = {**os.environ, "PYTHONPATH": str(src), "GENCRAFT_HOME": str(home)}
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "gencraft", "guard", "check", str(file), "--json"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode not in (0, 1):
        sys.exit(f"{src}: guard check {file.name} failed ({p.returncode}): {err.strip()[-300:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=None, help="git revision to compare with (default: before streaming)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--repo", type=Path, default=ROOT, help="the git checkout --old is taken from")
    args = ap.parse_args()
    old = args.old or default_old(args.repo)
    with tempfile.TemporaryDirectory(prefix="gencraft-guard-long-") as d:
        d = Path(d)
        files = inputs(d, args.mb)
        label = old[:12] + ("^" if old.endswith("^") else "")
        versions = {f"old ({label})": checkout(args.repo, old, d / "old"), "this checkout": ROOT / "src"}
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for r in range(args.rounds):
            order = list(versions.items()) if r % 2 == 0 else list(reversed(versions.items()))
            for name, file in files.items():
                for vname, src in order:
                    wall, rss = measure(src, file, d / "home")
                    b = best.get((vname, name))
                    best[(vname, name)] = (min(wall, b[0]), max(rss, b[1])) if b else (wall, rss)
        names = list(versions)
        print(f"gencraft guard check --json, {args.mb:g} MB inputs, best of {args.rounds} rounds taking turns "
              "(time) and peak RSS")
        print(f"{'input':<28}" + "".join(f"{v + ' s':>26}{'MB':>8}" for v in names))
        for name in files:
            print(f"{name:<28}" + "".join(f"{best[(v, name)][0]:>26.2f}{best[(v, name)][1]:>8.0f}" for v in names))


if __name__ == "__main__":
    main()
