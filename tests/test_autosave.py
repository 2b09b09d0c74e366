"""Nothing lost: checkpoints by wall time as well as steps, Ctrl-C/SIGTERM save and stop, a run with no
checkpoint yet is marked in progress, and a run killed twice with SIGKILL resumes to the loss of a run
that never stopped (the 2-kill version of bench/crash.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_robust import dataset  # noqa: F401 - the fixture
from test_train import fast

from gencraft.errors import RunError
from gencraft.runs import MARK, run_status
from gencraft.train.autosave import Autosave, Interrupted, parse_every

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_due_by_steps_time_and_signal(tmp_path: Path):
    before = signal.getsignal(signal.SIGINT)
    with Autosave(tmp_path, every_s=0.2, every_steps=10) as a:
        assert run_status(tmp_path)["state"] == "training"
        assert a.due(10) and not a.due(3)
        time.sleep(0.25)
        assert a.due(3)  # wall time, between step multiples
        a.saved(3)
        assert not a.due(4) and run_status(tmp_path)["checkpoint_step"] == 3
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: save and stop
        assert a.stopping and a.due(4)
        with pytest.raises(KeyboardInterrupt):  # the second: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        with pytest.raises(Interrupted, match="SIGINT: training stopped at step 4; checkpoint of step 3"):
            a.finish(4)
    assert signal.getsignal(signal.SIGINT) is before
    assert run_status(tmp_path)["state"] == "stopped"
    assert [parse_every(x) for x in ("300", "90s", "5m", "1.5h", "off")] == [300, 90, 300, 5400, 0]


def test_checkpoints_come_by_time_before_the_first_evaluation(dataset: Path, monkeypatch):  # noqa: F811
    import gencraft.train.loop as L

    steps: list[int] = []
    real = L.save_checkpoint
    monkeypatch.setattr(L, "save_checkpoint", lambda run, *a, **kw: (steps.append(a[-1]["step"]), real(run, *a, **kw)))
    run = L.train(dataset, out="t", progress=False,
                  overrides=fast("max_iters=12", "eval_interval=1000", "checkpoint_every=1e-9"))
    assert steps == list(range(1, 13))  # every step (time), though the only evaluation is the last
    assert not (run / MARK).exists() and run_status(run)["state"] == "finished"


STEPS = ("max_iters=400", "eval_interval=1000", "log_interval=50")  # one evaluation: the last step


def _train_cli(ds: Path, home: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "GENCRAFT_HOME": str(home), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "gencraft", "train", str(ds), "--out", "c", "-q", "--checkpoint-every", "0.1"]
    for s in fast(*STEPS):
        args += ["--set", s]
    return subprocess.Popen([*args, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints/last/state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _next_checkpoint(p: subprocess.Popen, run: Path, after: int, timeout: float = 60) -> int | None:
    """The step of the first checkpoint after ``after``; None when the run ended before one came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = _checkpoint_step(run)
        if step > after and p.poll() is None:
            return step
        if p.poll() is not None:
            assert p.returncode == 0, p.communicate()
            return None
        time.sleep(0.02)
    raise AssertionError("no checkpoint came")


def test_killed_twice_resumes_to_the_loss_of_a_run_never_stopped(dataset: Path, gencraft_home: Path):  # noqa: F811
    from gencraft.runs import read_info
    from gencraft.train.loop import train

    run = gencraft_home / "runs" / "c"
    p, last, kills = _train_cli(dataset, gencraft_home), 0, 0
    while kills < 2 and (step := _next_checkpoint(p, run, last)) is not None:
        p.kill()  # SIGKILL: no chance to save anything more
        p.wait()
        kills += 1
        st = run_status(run)
        assert st["state"] == "interrupted" and st["checkpoint_step"] >= step
        assert not (run / "gencraft.json").exists()  # the only evaluation is the last step's
        with pytest.raises(RunError, match="no evaluated weights yet: it is interrupted"):
            read_info("c")
        last = st["checkpoint_step"]
        p = _train_cli(dataset, gencraft_home, "--resume")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert run_status(run)["state"] == "finished" and not (run / MARK).exists()
    resumed = json.loads((run / "gencraft.json").read_text())["metrics"]
    straight = train(dataset, out="straight", progress=False, overrides=fast(*STEPS))
    expected = json.loads((straight / "gencraft.json").read_text())["metrics"]
    assert resumed["step"] == expected["step"] == 400
    assert resumed["best_val_loss"] == pytest.approx(expected["best_val_loss"], abs=1e-4)


def test_ctrl_c_saves_stops_in_one_line_and_resumes(dataset: Path, gencraft_home: Path, cli, monkeypatch):  # noqa: F811
    import threading

    import gencraft.train.loop as L

    real = L.save_checkpoint

    def save_then_interrupt(run, *a, **kw):  # Ctrl-C arrives right after the first checkpoint by time
        real(run, *a, **kw)
        if a[-1]["step"] == 3:
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()
            time.sleep(0.2)

    monkeypatch.setattr(L, "save_checkpoint", save_then_interrupt)
    args = ["train", str(dataset), "--out", "i", "-q", "--checkpoint-every", "0"]
    for s in fast("max_iters=40", "eval_interval=1000", "checkpoint_interval=3"):
        args += ["--set", s]
    res = cli(*args)
    assert res.code == 130 and "Traceback" not in res.err, res.err
    assert res.err.strip() == ("SIGINT: training stopped at step 4; checkpoint of step 4 saved in "
                               f"{gencraft_home / 'runs/i/checkpoints'}; continue with the same command and --resume")
    assert run_status(gencraft_home / "runs/i") | {"state": "stopped", "checkpoint_step": 4} == \
        run_status(gencraft_home / "runs/i")
    assert cli(*args, "--resume").code == 0
    assert run_status(gencraft_home / "runs/i")["state"] == "finished"
