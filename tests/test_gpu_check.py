"""bench/gpu_check.sh: CI has no GPU, so it proves the script parses, refuses ``--device cuda``
without CUDA in one line (exit 2), and runs a step end to end on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gencraft.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), **env})


def test_scripts_parse():
    for name in ("gpu_check.sh", "gpu_wheels.sh"):
        res = subprocess.run(["bash", "-n", str(ROOT / "bench" / name)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_exit_2(tmp_path):
    res = _run([], tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("gpu_check: --device cuda:") and "no CUDA device" in lines[0]


def test_bad_arguments_exit_2(tmp_path):
    for args, word in ((["--device", "tpu"], "--device tpu"), (["--steps", "env,nope"], "unknown step nope"),
                       (["--budget", "soon"], "--budget soon")):
        res = _run(args, tmp_path)
        assert res.returncode == 2 and word in res.stderr, (args, res.stderr)


def test_env_step_on_cpu(tmp_path):
    res = _run(["--device", "cpu", "--steps", "env"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "env: python" in res.stdout and "gencraft and its server import" in res.stdout
    assert "all steps passed" in (tmp_path / "out" / "summary.txt").read_text()
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert rec["step"] == "env" and rec["torch"] == torch.__version__


def test_image_training_device_is_checked(tmp_path):
    from gencraft.train.image import train_image

    # the device is checked before anything is read or written
    with pytest.raises(UsageError, match="--device gpu"):
        train_image("no-such-dataset", "dcgan", out="r", steps=1, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            train_image("no-such-dataset", "dcgan", out="r", steps=1, device="cuda")
