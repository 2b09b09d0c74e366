"""``Linear``: ``nn.Linear`` with a fast path for CPU decoding.

Batch-1 decoding multiplies every weight matrix by one row, so a decode step costs one pass over
the weights: it is bound by how fast the CPU streams them from memory. PyTorch's float32 matmul on
x86 is MKL's, and on the development machine (AMD EPYC, 2 cores, torch 2.13) MKL runs a one-row
product on one core whatever the thread count: ~17 GB/s, where both cores read ~42 GB/s. numpy's
bundled OpenBLAS splits the same product across the cores (~40 GB/s), and also runs prompt
processing. Batched decoding (2..``BATCH_ROWS`` rows) and bfloat16 weights go through oneDNN with
the weight packed once (``mkldnn._linear_pointwise``): a BLAS GEMM re-packs the weights on every
call, and for one bf16 row the packed path is ~2x ATen's ``linear``.

The fast path is taken only inside :func:`cpu_inference` (the engine and the server's scheduler
enter it) and only without autograd; training and everything else use ``F.linear``. Inside it,
torch's own ops run on one thread: the matmuls bring their threads (OpenBLAS's; torch's, switched
on per call, for oneDNN), two pools spinning on two cores made each step 8x slower (measured), and
the ops left to torch at batch 1 are too small to parallelize anyway.

How many threads a matmul gets is measured, not guessed (:class:`ThreadTuner`): splitting it over
both cores doubles its speed on an idle machine and makes it 10-20x *slower* when another process
keeps one core busy (every split waits for its descheduled half).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

_lock = threading.Lock()
_users = 0  # generations inside cpu_inference() right now (several server threads may decode)
_saved_threads = 0
_torch_threads = 0  # what cpu_inference() set torch to (0 = left alone)
FAST_PATH = True  # off: every Linear is plain F.linear (bench/generate.py's A/B)
# float32 products of 2..BATCH_ROWS rows (batched decoding) go through oneDNN with weights packed
# once: a BLAS GEMM packs the weight matrix on every call, which for a few rows costs more than the
# product (measured, 13.8M shapes: 4 rows 66-88 us vs 107-158 us on OpenBLAS; the 8000-row head at
# 16 rows 415 vs 928 us). The packed copy doubles the weights' memory, so it is made only when a
# batch is decoded; one row (BLAS's GEMV) and prompts (many rows, compute-bound) stay on OpenBLAS.
BATCH_ROWS = 32


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) that decodes through the fast CPU path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _users and FAST_PATH and x.is_cpu and not torch.is_grad_enabled():
            # the parameters straight from their dict: ``self.weight`` goes through nn.Module.__getattr__
            # (~0.4 us), and a small model's decode step makes ~150 such lookups (~3% of its time)
            params = self._parameters
            if "weight" in params and "bias" in params:
                w, b = params["weight"], params["bias"]
            else:  # a parametrized weight (e.g. spectral norm) is computed by the attribute
                w, b = self.weight, self.bias
            if x.dtype == torch.float32 and w.dtype == torch.float32:
                rows = x.numel() // x.shape[-1]
                if 1 < rows <= BATCH_ROWS:  # batched decoding: BLAS would re-pack the weights every call
                    return _onednn_linear(self, x, w, b, batch=BATCH_ROWS)
                return _blas_linear(self, x, w, b)
            if x.dtype == torch.bfloat16 and w.dtype == torch.bfloat16:
                return _onednn_linear(self, x, w, b)
        return F.linear(x, self.weight, self.bias)


class _Derived(tuple):
    """``(key, value)``: something derived from a module's weights and kept on it (oneDNN's packed
    copy, numpy views). Copies and pickles of the module leave it behind (they become None): a
    packed oneDNN tensor cannot be deep-copied at all, and a copy derives its own from its own weights."""

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple:
        return (type(None), ())


def _cached(module: nn.Module, name: str, weight: torch.Tensor, make: Any) -> Any:
    """A derived copy/view of ``weight`` kept on the module until the weight is replaced or written."""
    key = (weight.data_ptr(), weight.dtype, None if weight.is_inference() else weight._version)
    hit = module.__dict__.get(name)
    if hit is None or hit[0] != key:
        hit = _Derived((key, make(weight.detach())))
        module.__dict__[name] = hit
    return hit[1]


def _blas_linear(m: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                 out_in: bool = True) -> torch.Tensor:
    """``x @ W.T + b`` (``out_in``: W is ``[out, in]`` as in ``nn.Linear``; else ``[in, out]``) on numpy's
    BLAS; ``w``/``b`` are module ``m``'s weight and bias (its numpy views are cached on it)."""
    key = (w.data_ptr(), 0 if b is None else b.data_ptr())
    hit = m.__dict__.get("_gencraft_np")
    if hit is None or hit[0] != key:  # numpy views share the parameters' memory: only a new tensor needs a new view
        wn = w.detach().numpy()
        hit = _Derived((key, wn.T if out_in else wn, None if b is None else b.detach().numpy(), w.numel() * 4))
        m.__dict__["_gencraft_np"] = hit
    _, wt, bias, nbytes = hit
    a = x.detach().numpy()
    rows = a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a
    out = _tuner("blas").run(nbytes, lambda: rows @ wt)
    if bias is not None:
        out += bias
    return torch.from_numpy(out.reshape(*a.shape[:-1], out.shape[-1]) if a.ndim != 2 else out)


def _onednn_linear(m: nn.Linear, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                   batch: int = 1) -> torch.Tensor:
    """``x @ W.T + b`` on oneDNN with ``w`` (module ``m``'s weight) packed once for ``batch`` rows."""
    packed = _cached(m, f"_gencraft_onednn_weight{batch}", w,
                     lambda w: torch.ops.mkldnn._reorder_linear_weight(w, batch_size=batch))
    bias = None if b is None else b.detach()
    nbytes = w.numel() * w.element_size()
    return _tuner("torch").run(nbytes, lambda: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))


class ThreadTuner:
    """Runs matmuls with one thread or ``many``, whichever its own timings say is faster now.

    It times windows of calls (seconds per byte of weights over ``WINDOW`` calls, a few decode
    steps' mix of shapes) in the current setting, now and then probes the other setting for one
    window and keeps the faster; after a probe that lost clearly it waits twice as long before the
    next one, and a probe that is clearly losing stops early, so a loaded machine pays little. It
    starts on one thread, the setting that is never a disaster (``start``: a tuner whose calls are
    whole decode steps starts on all cores when the machine looks idle, or its first window of steps
    would all run on one). Matmuls under ``SPLIT_MIN`` bytes of weights (a small model's layers,
    which sit in cache) always run on one thread: splitting them gains little and risks the same
    stalls. Results do not depend on the choice: each output
    element is reduced in the same order with 1 or 2 threads (tests check the tokens match).
    """

    WINDOW = 64  # calls per measurement
    BASE_GAP, MAX_GAP = 6, 192  # windows between probes
    SPLIT_MIN = 512 * 1024

    def __init__(self, many: int, set_threads: Callable[[int], None], fixed: int = 0, busy: bool = False,
                 restore: bool = False, window: int = WINDOW, start: int = 1) -> None:
        self.many = many
        self.window = window
        self.set_threads = set_threads
        # ``restore``: go back to one thread after each split call. For torch's pool, whose threads
        # also run every small op between the matmuls: a sleeping OpenMP pool takes ~45 us to wake on
        # this VM, so a 5 us layer norm over 2 threads took 52 us (measured); switching costs 0.2 us.
        self.restore = restore
        self.mode = fixed or start
        self.fixed = fixed
        self.applied = 0
        self.cost: dict[int, float] = {}  # seconds per byte, moving average per setting
        # ``busy``: the machine looked loaded when we started; probe late (each probe of a split that
        # stalls also leaves OpenBLAS's worker spinning for ~0.1 s, slowing the next steps)
        self.gap = self.MAX_GAP // 8 if busy else 1
        self.left = self.gap  # windows before the next probe
        self.probing = False
        self.base = self.mode
        self.n = 0
        self.secs = 0.0
        self.bytes = 0
        self.seen: set[tuple[Any, int]] = set()  # (shape key, threads) already run once

    def run(self, nbytes: int, fn: Callable[[], Any], key: Any = None) -> Any:
        """``fn()`` on the thread count chosen now; ``nbytes`` is what it reads (the cost is per byte),
        ``key`` names its shape for the untimed first call (default: ``nbytes``)."""
        want = self.mode if nbytes >= self.SPLIT_MIN or self.fixed else 1
        if self.applied != want:
            self.set_threads(want)
            self.applied = want
        if self.restore and want > 1:
            try:
                return self._timed(nbytes, want, fn, key)
            finally:
                self.set_threads(1)
                self.applied = 1
        return self._timed(nbytes, want, fn, key)

    def _timed(self, nbytes: int, want: int, fn: Callable[[], Any], key: Any) -> Any:
        if self.fixed or self.many <= 1 or want != self.mode:
            return fn()
        seen = (nbytes if key is None else key, want)
        if seen not in self.seen:  # a first call creates threads / JIT-compiles kernels: not timed
            self.seen.add(seen)
            return fn()
        t = time.perf_counter()
        out = fn()
        self.secs += time.perf_counter() - t
        self.bytes += nbytes
        self.n += 1
        if self.probing and self.n >= max(2, self.window // 8) and self.secs > 1.5 * self.cost[self.base] * self.bytes:
            # clearly losing (one thread on an idle machine, a split waiting on a busy core): stop now. A
            # probe of one thread where two are ~1.7x faster had cost a whole window: with whole decode
            # steps as calls, 8 slow steps in every 56 (124M bf16: 6.45 ms a step alone, 7.0-7.5 in the engine)
            self._window(self.secs / self.bytes)
            self.n, self.secs, self.bytes = 0, 0.0, 0
        elif self.n == self.window:
            self._window(self.secs / self.bytes)
            self.n, self.secs, self.bytes = 0, 0.0, 0
        return out

    def _window(self, c: float) -> None:
        if self.probing:
            self.probing = False
            base_cost = self.cost[self.base]
            if c < base_cost:
                self.cost[self.mode] = c
                self.gap = self.BASE_GAP
            else:
                self.mode = self.base
                self.gap = min(self.gap * 2, self.MAX_GAP) if c > 1.5 * base_cost else self.BASE_GAP
            self.left = self.gap
            return
        old = self.cost.get(self.mode)
        self.cost[self.mode] = c if old is None else 0.7 * old + 0.3 * c
        self.left -= 1
        if self.left <= 0:
            self.base, self.mode, self.probing = self.mode, (1 if self.mode != 1 else self.many), True


_tuners: dict[str, ThreadTuner] = {}


def _tuner(kind: str, setter: Callable[[int], None] | None = None) -> ThreadTuner:
    """The tuner of ``kind`` ("blas", "torch", "attention"; or another kind with its own thread ``setter``)."""
    t = _tuners.get(kind)
    if t is None:
        t = _tuners[kind] = _make_tuner(kind, setter)
    return t


def tuned(kind: str, nbytes: int, fn: Callable[[], Any], setter: Callable[[int], None] | None = None) -> Any:
    """``fn()`` (torch ops reading ``nbytes``, e.g. a batch's attention over its KV cache) on one
    thread or all cores, as measured by the ``kind`` tuner; outside :func:`cpu_inference`, just ``fn()``.
    ``setter``: how ``fn`` is given its thread count when not through torch (the C decode step: one
    call is a whole step, see :func:`_make_tuner`)."""
    if not (_users and FAST_PATH):
        return fn()
    return _tuner(kind, setter).run(nbytes, fn, key=kind)


def _make_tuner(kind: str, setter: Callable[[int], None] | None = None) -> ThreadTuner:
    forced = os.environ.get("GENCRAFT_DECODE_THREADS", "").strip()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    whole_steps = setter is not None
    busy = _other_process_running()
    fixed = int(forced) if forced.isdigit() else 0
    if whole_steps:  # a whole decode step (the C step) a call: windows of 8 steps, not 64
        # a probe costs at most two steps (a losing one stops there), so a machine that looked busy
        # at one instant only decides where to start, not how long before trying the other setting
        return ThreadTuner(cores, setter, fixed=fixed, window=8, start=1 if busy else cores)
    setter = _openblas_setter() if kind == "blas" else torch.set_num_threads
    return ThreadTuner(cores, setter, fixed=fixed, busy=busy, restore=kind != "blas")


def _other_process_running() -> bool:
    """Whether a thread of another process is runnable right now (Linux; False where it cannot tell).

    ``/proc/loadavg`` counts every runnable thread on the machine, this process's own included: a
    decode worker still spinning after the previous generation (OpenBLAS's, the C step's) is not
    another process, and counting it made a tuner start on one thread on an idle machine.
    """
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended meanwhile
                pass
    except (OSError, ValueError, IndexError):
        return False
    return running > own


def _openblas_setter() -> Callable[[int], None]:
    """``set_num_threads`` of the BLAS numpy uses (no-op if threadpoolctl cannot find it)."""
    import numpy as np
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    npdir = os.path.dirname(np.__file__).rsplit(os.sep, 1)[0]
    libs = [lib for lib in libs if lib.filepath.startswith(npdir)] or libs
    if not libs:
        return lambda n: None
    return libs[0].set_num_threads


def use_fast_linear(model: nn.Module) -> nn.Module:
    """Give every plain ``nn.Linear`` of ``model`` (e.g. a Hugging Face model) the fast path, in place,
    and the float32 path to ``transformers``' GPT-2-style ``Conv1D`` (``x @ W + b``, W ``[in, out]``).

    Only the class changes: parameters, buffers, hooks and the state dict stay as they are.
    """
    for m in model.modules():
        if type(m) is nn.Linear:
            m.__class__ = Linear
        elif type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None and hasattr(m, "nf"):
            m.__class__ = _fast_conv1d(type(m))
    return model


_conv1d_classes: dict[type, type] = {}


def _fast_conv1d(cls: type) -> type:
    """A subclass of ``transformers``' Conv1D whose forward takes the fast path while decoding."""
    fast = _conv1d_classes.get(cls)
    if fast is None:
        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            if (_users and FAST_PATH and x.is_cpu and not torch.is_grad_enabled()
                    and x.dtype == torch.float32 and self.weight.dtype == torch.float32):
                return _blas_linear(self, x, self.weight, self.bias, out_in=False)
            return cls.forward(self, x)

        fast = _conv1d_classes[cls] = type(f"Fast{cls.__name__}", (cls,), {"forward": forward})
    return fast


def _want_threads(dtype: torch.dtype | None) -> int:
    """Torch threads between the matmuls while decoding (0 = leave the current setting)."""
    return 1 if dtype in (torch.float32, torch.bfloat16) else 0


def _model_dtype(model: Any) -> tuple[bool, torch.dtype | None]:
    params = getattr(model, "parameters", None)
    if params is None:
        return False, None
    p = next(iter(params()), None)
    if p is None:
        return False, None
    return p.device.type == "cpu", p.dtype


@contextlib.contextmanager
def cpu_inference(model: Any) -> Iterator[None]:
    """Decode ``model`` through the fast CPU path (thread-safe, re-entrant; restores threads after).

    ``GENCRAFT_DECODE_THREADS=N`` fixes the matmuls' thread count at N instead of measuring it.
    """
    global _users, _saved_threads, _torch_threads
    on_cpu, dtype = _model_dtype(model)
    if not on_cpu:
        yield
        return
    want = _want_threads(dtype)
    with _lock:
        if _users == 0:
            _saved_threads = torch.get_num_threads()
            _torch_threads = want
            if want:
                torch.set_num_threads(want)
                for t in _tuners.values():
                    t.applied = 0
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _torch_threads:
                torch.set_num_threads(_saved_threads)
