"""Data parallelism in threads on one CPU: a batch's rows shared out between threads that each run
whole forward and backward passes on one core.

At small shapes a training step is hundreds of small ops. PyTorch's intra-op threads spread each
op over the cores and pay a wake-up and a join per op: at nanoGPT's CPU shape (0.8M parameters,
batches of 12 x 64) two such threads were no faster than one, while two threads each running six
of the twelve rows end to end, one core each, were 1.8x one (bench/RESULTS.md, issue #19).

The autograd engine runs a CPU backward on the thread that calls it and the ops release the GIL,
so the shares run side by side. Each share's backward returns its gradients
(``torch.autograd.grad``) and the calling thread adds them in share order, so a run repeats bit
for bit whatever order the threads finish in. Each share's loss is weighted by its share of the
batch's scored targets, so the sum is the whole batch's mean loss and gradient (up to float rounding).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from gencraft.errors import ConfigError

IGNORE_INDEX = -1  # targets the models' cross-entropy skips (gpt.py, lstm.py)
KINDS = ("gpt", "lstm")  # families whose forward is a plain (x, y) -> mean loss over rows
MODES = ("auto", "rows", "ops")


def row_threads(mode: str, threads: int, *, kind: str, batch_size: int, dropout: float, compile: bool,
                distributed: bool, objective: str = "lm") -> int:
    """How many row threads a CPU run uses: 1 means PyTorch's intra-op threads instead (``ops``).

    ``auto`` takes rows for a ``gpt`` or ``lstm`` language model in one process, without dropout
    (dropout draws from one random stream: threads taking turns on it would make a run unrepeatable)
    and without torch.compile; ``rows`` asks for them and names what stands in the way."""
    n = min(threads, batch_size)
    if mode == "ops" or n < 2:
        return 1
    why = None
    if kind not in KINDS or objective != "lm":
        why = f"model {kind}" + (f" with objective {objective}" if objective != "lm" else "")
    elif dropout > 0:
        why = f"dropout={dropout:g} (one random stream shared by the threads: runs would not repeat)"
    elif compile:
        why = "compile=true"
    elif distributed:
        why = "torchrun (its processes are the data parallelism)"
    if why is None:
        return n
    if mode == "rows":
        raise ConfigError(f"--set parallel=rows: not with {why}; use parallel=ops or auto", param="parallel")
    return 1


def _allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _pin(cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(0, cpus)  # 0: the calling thread (Linux)
    except OSError:
        pass


class RowThreads:
    """``n`` threads (the caller's and ``n - 1`` workers, each on one intra-op thread) that run a
    function on shares of a batch's rows. Use as a context manager (the workers stop on exit).

    Each thread keeps its own core while the shares run (when there are as many cores as threads):
    unpinned, Linux woke each worker on the waker's core (wake-affine), the shares queued on one core
    with the other idle, and a run went at one thread's speed for minutes (16k against 29-30k tok/s
    at nanoGPT's CPU shape). Workers are pinned for their life, the calling thread only inside
    :meth:`map`, so the threads it starts between steps (decoding a sample...) keep every core."""

    def __init__(self, n: int) -> None:
        self.n = max(1, n)
        cpus = _allowed_cpus()
        self._cpus = cpus[:self.n] if len(cpus) >= self.n > 1 else []
        self._home = set(cpus)
        nth = itertools.count(1)
        self._pool = (ThreadPoolExecutor(self.n - 1, thread_name_prefix="gencraft-rows",
                                         initializer=self._start_worker, initargs=(nth,))
                      if self.n > 1 else None)

    def _start_worker(self, nth: Iterator[int]) -> None:
        torch.set_num_threads(1)
        if self._cpus:
            _pin({self._cpus[next(nth)]})

    def __enter__(self) -> RowThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def map(self, fn: Callable[..., Any], items: Sequence[tuple]) -> list[Any]:
        """``[fn(*item) for item in items]``, the first item on the calling thread and the rest on the
        workers at the same time; every call finishes before the first error is raised."""
        if self._pool is None or len(items) < 2:
            return [fn(*item) for item in items]
        futures: list[Future] = [self._pool.submit(fn, *item) for item in items[1:]]
        first: list[Any] = []
        error: BaseException | None = None
        if self._cpus:
            _pin({self._cpus[0]})
        try:
            first.append(fn(*items[0]))
        except BaseException as e:  # noqa: BLE001 -- raised below, after the workers are done
            error = e
        rest = []
        for f in futures:
            try:
                rest.append(f.result())
            except BaseException as e:  # noqa: BLE001
                error = error or e
        if self._cpus:
            _pin(self._home)
        if error is not None:
            raise error
        return first + rest

    def shares(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """The rows of ``x, y`` in up to ``n`` consecutive shares, each with its weight: its fraction of
        the batch's scored targets (shares with none are left out, they add nothing to a mean)."""
        xs, ys = torch.tensor_split(x, min(self.n, len(x))), torch.tensor_split(y, min(self.n, len(y)))
        counts = [int((yi != IGNORE_INDEX).sum()) for yi in ys]
        total = sum(counts)
        if total == 0:  # nothing scored: one share, the model's own answer (as without threads)
            return [(x, y, 1.0)]
        return [(xi, yi, c / total) for xi, yi, c in zip(xs, ys, counts, strict=True) if c]

    def grads(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
              params: list[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        """Forward and backward of ``step(x, y) -> mean loss`` over the batch, the rows shared out:
        the gradients of ``scale`` x the batch's mean loss are added to ``params``' ``.grad`` (in share
        order); returns the batch's mean loss (detached, float32)."""

        def one(xi: torch.Tensor, yi: torch.Tensor, w: float) -> tuple[torch.Tensor, tuple]:
            loss = step(xi, yi)
            g = torch.autograd.grad(loss * (w * scale), params, allow_unused=True)
            return loss.detach().float() * w, g

        done = self.map(one, self.shares(x, y))
        for i, p in enumerate(params):
            parts = [g[i] for _, g in done if g[i] is not None]
            if not parts:
                continue
            total = functools.reduce(torch.add, parts)  # share order, whichever thread finished first
            if p.grad is None:
                p.grad = total.contiguous()
            else:
                p.grad.add_(total)
        loss = done[0][0]
        for extra, _ in done[1:]:
            loss = loss + extra
        return loss
