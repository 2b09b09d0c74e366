"""Multi-node and elastic training on torchrun: two "nodes" on this machine meet through a c10d
rendezvous; one worker is killed mid-run, torchrun restarts the group, and training goes on from
the last checkpoint; each rank reads its own part of the tokens."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gencraft.data import prepare
from gencraft.data.dataset import TokenShards
from gencraft.train.dist import DistInfo, rank_part

SETS = ["n_layer=1", "n_head=2", "n_embd=32", "block_size=32", "batch_size=8", "eval_iters=2", "log_interval=2",
        "warmup_iters=2", "learning_rate=3e-3", "num_threads=1", "max_iters=48", "eval_interval=48",
        "checkpoint_interval=8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []


def test_rank_parts_are_disjoint_views_covering_the_tokens():
    parts = [np.arange(0, 7, dtype="<u2"), np.arange(7, 20, dtype="<u2"), np.arange(20, 23, dtype="<u2")]
    for data in (TokenShards(parts), np.arange(23, dtype="<u2")):
        got = [np.asarray(rank_part(data, DistInfo(rank=r, world_size=3))) for r in range(3)]
        assert np.array_equal(np.concatenate(got), np.arange(23)) and [len(g) for g in got] == [7, 8, 8]
    assert rank_part(parts[1], DistInfo()) is parts[1]  # one process: all of it


def test_two_nodes_on_torchrun_survive_a_killed_worker(tmp_path, process_tag):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside python")
    text = "".join(f"line {i}: the {'quick brown fox' if i % 3 else 'lazy dog'} jumps {i % 17} times.\n"
                   for i in range(6000))
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    ds = prepare([tmp_path / "corpus.txt"], tmp_path / "ds", unit="line", license="CC0-1.0", stream=True,
                 chunk_chars=40_000, stream_bytes=1)  # several shards: each rank maps its own
    run = Path(os.environ["GENCRAFT_HOME"]) / "runs" / "elastic"
    port = _free_port()
    # one store per rendezvous round: with the store shared across rounds (torch's default since 2.5),
    # a restarted group can read a dead worker's address (pytorch/pytorch#135712); docs/scale.md
    env = dict(os.environ, **process_tag, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nodes = []
    for host in (1, 0):
        args = [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--max-restarts", "1",
                "--monitor-interval", "0.5", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-id", "elastic-test", "--rdzv-conf", f"is_host={host}", "-m", "gencraft", "train", str(ds),
                "--out", "elastic", "-q", *[a for s in SETS for a in ("--set", s)]]
        log = open(tmp_path / f"node{len(nodes)}.log", "w")  # a file, not a pipe: tracebacks fill pipes
        nodes.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))
    import psutil

    try:
        state = run / "checkpoints" / "last" / "state.json"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and all(n.poll() is None for n in nodes):
            if state.exists() and json.loads(state.read_text())["step"] >= 16:
                break
            time.sleep(0.1)
        assert state.exists(), [(tmp_path / f"node{i}.log").read_text()[-1500:] for i in range(2)]
        workers = psutil.Process(nodes[1].pid).children()  # node 1's training process
        old_group = workers + psutil.Process(nodes[0].pid).children()
        for w in workers:
            w.send_signal(signal.SIGKILL)
        # the healthy worker goes on until its next collective (a step the dead one had already
        # contributed to can still finish, be logged and checkpointed, or it saves on torchrun's
        # SIGTERM): read what the killed group did once all of it is gone, before the restarted
        # group (a new rendezvous and a fresh import of torch, seconds away) writes anything
        psutil.wait_procs(old_group, timeout=60)
        before = max(e["step"] for e in _events(run) if e.get("split") == "train")
        resumed_from = json.loads(state.read_text())["step"]
        try:
            codes = [n.wait(timeout=240) for n in nodes]
        except subprocess.TimeoutExpired:
            pytest.fail(f"the group did not finish within 240 s of the kill (checkpoint step "
                        f"{json.loads(state.read_text())['step']}); node logs: "
                        + " ||| ".join((tmp_path / f"node{i}.log").read_text()[-3000:] for i in range(2)))
        errs = [(tmp_path / f"node{i}.log").read_text() for i in range(2)]
    finally:  # torchrun's workers run in sessions of their own: process_tag ends them all
        for n in nodes:
            if n.poll() is None:
                os.killpg(n.pid, signal.SIGKILL)
            n.wait()
    assert codes == [0, 0], [e[-2000:] for e in errs]
    assert "exitcode: -9" in errs[1]  # the killed worker; torchrun restarted the group...
    info = json.loads((run / "gencraft.json").read_text())
    assert info["metrics"]["step"] == 48  # ...and the run finished
    assert json.loads(state.read_text())["step"] == 48
    # the curve is whole, and what was done twice (the killed session's steps past its checkpoint,
    # logged again by the restarted one) is at most one checkpoint interval (+ one log interval)
    steps = [e["step"] for e in _events(run) if e.get("split") == "train"]
    assert 0 <= before - resumed_from <= 8 + 2, (resumed_from, before, steps)
    assert sorted(set(steps)) == list(range(2, 49, 2))
    assert [e["step"] for e in _events(run) if e.get("split") == "val"] == [48]  # written once, by rank 0
    redone = sorted({s for s in steps if steps.count(s) > 1})
    assert all(resumed_from < s <= before for s in redone) and len(redone) <= (8 + 2) // 2, (resumed_from, before, steps)
    # two ranks, each with its own part of the tokens: the batch of a step is twice one rank's
    assert info["metrics"]["tokens_seen"] == 48 * 2 * 8 * 32
