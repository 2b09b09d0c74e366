"""Row threads (gencraft.train.rows): a batch's rows shared out between threads, one core each.

The gradients and loss equal one thread's over the whole batch; a run repeats bit for bit and
resumes exactly; the policy says when rows are taken; the calling thread's cores are given back."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import corpus, fast, write_dataset

from gencraft.errors import ConfigError
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.train.rows import RowThreads, row_threads


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32))


def batch(rows: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(40, (rows, 16), generator=g)
    return x, torch.roll(x, -1, dims=1)


def whole_batch(net: GPT, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    loss = net(x, y)[1]
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in net.named_parameters()}


def shared_out(net: GPT, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[float, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    with RowThreads(n) as rt:
        loss = rt.grads(lambda a, b: net(a, b)[1], x, y, list(net.parameters()))
    return loss.item(), {k: p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("rows, n", [(8, 2), (5, 3), (7, 4)])
def test_shared_rows_give_the_whole_batchs_loss_and_gradients(rows: int, n: int):
    net = tiny_gpt()
    x, y = batch(rows)
    loss1, g1 = whole_batch(net, x, y)
    loss2, g2 = shared_out(net, x, y, n)
    assert loss2 == pytest.approx(loss1, rel=1e-6)
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-5, atol=1e-6, msg=k)


def test_shares_are_weighted_by_scored_targets():
    """Targets of -1 are skipped by the models' loss: a share with fewer scored targets weighs less,
    and a share with none is left out (its mean would be 0/0)."""
    net = tiny_gpt()
    x, y = batch(6)
    y[0, 3:] = -1
    y[4:] = -1  # the third share of three scores nothing
    loss1, g1 = whole_batch(net, x, y)
    rt = RowThreads(3)
    assert [round(w, 4) for _, _, w in rt.shares(x, y)] == [round(19 / 51, 4), round(32 / 51, 4)]
    loss2, g2 = shared_out(net, x, y, 3)
    rt.close()
    assert loss2 == pytest.approx(loss1, rel=1e-6)
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-5, atol=1e-6, msg=k)


def test_shared_rows_repeat_bit_for_bit_and_add_to_existing_gradients():
    net = tiny_gpt()
    x, y = batch(9)
    _, a = shared_out(net, x, y, 3)
    _, b = shared_out(net, x, y, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with RowThreads(3) as rt:  # gradient accumulation: a second micro-batch adds to .grad
        rt.grads(lambda u, v: net(u, v)[1], x, y, list(net.parameters()), scale=0.5)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, 1.5 * a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_a_workers_error_is_raised_after_every_share_is_done():
    seen: list[str] = []

    def fn(i: int) -> int:
        seen.append(threading.current_thread().name)
        if i == 2:
            raise ValueError("share 2 failed")
        return i

    with RowThreads(3) as rt:
        assert rt.map(fn, [(0,), (1,)]) == [0, 1]
        with pytest.raises(ValueError, match="share 2"):
            rt.map(fn, [(0,), (1,), (2,)])
    assert any(name.startswith("gencraft-rows") for name in seen)


def test_policy():
    common = dict(kind="gpt", batch_size=12, dropout=0.0, compile=False, distributed=False)
    assert row_threads("auto", 2, **common) == 2
    assert row_threads("auto", 8, **{**common, "batch_size": 3}) == 3
    assert row_threads("ops", 2, **common) == 1
    assert row_threads("auto", 1, **common) == 1
    for change in ({"dropout": 0.1}, {"compile": True}, {"distributed": True}, {"kind": "hf"}):
        assert row_threads("auto", 2, **{**common, **change}) == 1
        with pytest.raises(ConfigError, match="parallel=rows") as e:
            row_threads("rows", 2, **{**common, **change})
        assert e.value.param == "parallel"
    assert row_threads("auto", 2, **common, objective="dpo") == 1


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_training_on_row_threads_resumes_exactly_and_learns_as_one_thread(tmp_path: Path, kind: str):
    """N steps straight == N/2 steps then --resume for N/2 more, bit for bit, on two row threads;
    the losses match one thread's whole-batch training; the calling thread gets its cores back."""
    from gencraft.train.loop import train

    ds = write_dataset(tmp_path / "ds", corpus())
    common = fast("eval_interval=10", "lr_decay_iters=30", "dropout=0.0")
    if kind == "lstm":
        common = [c for c in common if not c.startswith("n_head")] + ["n_hidden=32"]
    rows = [c for c in common if not c.startswith("num_threads")] + ["num_threads=2", "parallel=rows"]
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    a = train(ds, model=kind, out="straight", progress=False, overrides=rows + ["max_iters=30"])
    assert cpus is None or os.sched_getaffinity(0) == cpus
    b = train(ds, model=kind, out="halves", progress=False, overrides=rows + ["max_iters=20"])
    b = train(ds, model=kind, out="halves", resume=True, progress=False, overrides=["max_iters=30"])
    one = train(ds, model=kind, out="one", progress=False, overrides=common + ["max_iters=30"])
    wa, wb = (load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    info = {r.name: json.loads((r / "gencraft.json").read_text()) for r in (a, b, one)}
    assert info["straight"]["train"]["parallel"] == "rows"
    assert info["straight"]["metrics"]["best_val_loss"] == info["halves"]["metrics"]["best_val_loss"]
    assert info["straight"]["metrics"]["best_val_loss"] == pytest.approx(info["one"]["metrics"]["best_val_loss"],
                                                                         abs=2e-3)
