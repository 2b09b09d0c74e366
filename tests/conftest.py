"""Fixtures shared by every test module.

Every test gets its own ``GENCRAFT_HOME`` (a temporary folder), so tests never touch
``~/.gencraft`` and never see each other's datasets and runs. Keep helpers that only one
test module needs in that module.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir():  # CI lays shared/ beside the clone; a developer's checkout too
    SHARED_DATA = Path(os.environ.get("GENCRAFT_SHARED_DATA", "/work/shared/data"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny models: one thread is fastest for them and leaves the other core to the
    subprocesses some tests start (DDP, CLI runs). Restored after each test (training sets it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def gencraft_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("gencraft_home")
    monkeypatch.setenv("GENCRAFT_HOME", str(home))
    return home


PROCESS_TAG = "GENCRAFT_TEST_PROCESS_TAG"


@pytest.fixture
def process_tag() -> Iterator[dict[str, str]]:
    """Environment to add to the subprocesses a test starts: when the test ends, passed or failed,
    every process that carries it is killed: what they started too (torchrun's workers, in sessions
    of their own) and orphans whose parent died (found by their environment, not their parent)."""
    tag = {PROCESS_TAG: uuid.uuid4().hex}
    yield tag
    import psutil

    mine = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(PROCESS_TAG) == tag[PROCESS_TAG]:
                p.send_signal(signal.SIGKILL)
                mine.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    psutil.wait_procs(mine, timeout=10)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``gencraft ARGS...`` in-process: ``cli("data", "prepare", ...) -> CliResult``."""
    from gencraft.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny LJSpeech folders of espeak-ng reading the sample corpus (voices A and B, 16 sentences
    each) and the prepared dataset of voice A: ``{"A": folder, "B": folder, "dataset": path}``."""
    from gencraft.data.speech import prepare_speech
    from gencraft.generate.espeak import make_espeak_corpus

    root = tmp_path_factory.mktemp("speech")
    a = make_espeak_corpus(root / "A", "A", 16)
    b = make_espeak_corpus(root / "B", "B", 16)
    ds = prepare_speech(a, out=root / "ds-A", license="CC0-1.0", speaker="espeak voice A", val_fraction=0.15)
    return {"A": a, "B": b, "dataset": ds}
