"""CPU decode tuning in one place: :class:`DecodeSession`.

Decoding a text model on the CPU goes through paths that PyTorch's defaults do not take
(docs/performance.md says why and what each buys): float32 products on numpy's BLAS, batched and
bfloat16 products on oneDNN with the weights packed once, the GPT's whole one-sequence step in C
(:mod:`gencraft.models.native`), torch's own small ops on one thread, and a
:class:`ThreadTuner` per kind of work that measures whether one thread or all cores is faster now.

A session holds all of it for one model: the settings (the C step on or off, the fast products on
or off, a fixed thread count), the tuners, the weights derived for the fast paths (numpy views,
oneDNN's packed copies: kept here, not on the modules, so copying or saving a model never meets
them), the C step's plan for each KV cache, and whether the weights were moved into huge pages.

    with decode.session(model):          # the model's own session (made once, kept as long as the model)
        logits, cache = model.step(...)
    with DecodeSession(model, native=False):   # an explicit one (bench/generate.py's A/B)
        generate(model, ...)                   # the engine uses the session active on this thread

Entering a session activates it on the calling thread only: :class:`~gencraft.models.linear.Linear`
and :meth:`GPT.step <gencraft.models.gpt.GPT.step>` look it up (a context variable) and take the
fast paths; outside a session, or with autograd on, they are plain PyTorch. Threads: while active,
the calling thread runs torch's ops on one thread (OpenMP's thread count is per thread: the session
sets it through the OpenMP library torch uses and restores it on exit, leaving other threads and
the process default alone); OpenBLAS's pool is one per process, sized by the tuner per product.

Settings a user has (documented in the README): ``GENCRAFT_NATIVE=0`` keeps decoding off the C step;
``GENCRAFT_DECODE_THREADS=N`` fixes the thread count instead of measuring it.

To extend (faster prefill, int8 or bf16 products, another fused step): add the path as a method
of the session that reads its derived weights through :meth:`DecodeSession.derived` and runs under
:meth:`DecodeSession.tuner` of a kind of its own; an option of the session's constructor turns it
off for an A/B.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from gencraft.models import native

log = logging.getLogger(__name__)

# float32 products of 2 rows and more (batched decoding, prompts) go through oneDNN with weights
# packed once: a BLAS GEMM packs the weight matrix on every call, which for a few rows costs more than
# the product, and for a prompt's rows oneDNN's kernel runs ~1.45x OpenBLAS's (docs/performance.md).
# The packed copy (for BATCH_ROWS rows, which serves any count) doubles those matrices' memory, so it
# is made only when a batch or a prompt is multiplied; one row (BLAS's GEMV) stays on BLAS. Products
# of up to BATCH_ROWS rows are a batch's (bound by reading the weights), more are a prompt's.
BATCH_ROWS = 32
# batches of up to NATIVE_ROWS rows decode in the multi-row C step (native.run_rows), larger ones in
# PyTorch (docs/performance.md); GENCRAFT_NATIVE_ROWS overrides it (0: batches stay in PyTorch)
NATIVE_ROWS = 64

_ACTIVE: contextvars.ContextVar[DecodeSession | None] = contextvars.ContextVar("gencraft_decode", default=None)


# active() -> the session active on this thread, or None (plain PyTorch); the ContextVar's own
# getter, as the products call it once each
active = _ACTIVE.get


_sessions: weakref.WeakKeyDictionary[Any, DecodeSession] = weakref.WeakKeyDictionary()
_sessions_lock = threading.Lock()


def session(model: Any) -> DecodeSession:
    """The session to decode ``model`` in: the one active on this thread if any (a caller's explicit
    choice), else the model's own (made on first use, dropped with the model)."""
    s = _ACTIVE.get()
    if s is not None:
        return s
    if not _weakrefable(model):  # nothing to keep it by: a session for this call
        return DecodeSession(model)
    with _sessions_lock:
        s = _sessions.get(model)
        if s is None:
            s = _sessions[model] = DecodeSession(model)
    return s


def configure(model: Any, **options: Any) -> DecodeSession:
    """Give ``model`` a session of its own with ``options`` (``int8=True``: 8-bit decoding; see
    :class:`DecodeSession`), used from then on wherever the model decodes."""
    s = DecodeSession(model, **options)
    with _sessions_lock:
        _sessions[model] = s
    return s


def tuned(kind: str, nbytes: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` (torch ops reading ``nbytes``, e.g. a batch's attention over its KV cache) on one
    thread or all cores, as the active session's ``kind`` tuner measures; no session: just ``fn()``."""
    s = _ACTIVE.get()
    if s is None:
        return fn()
    return s.tuner(kind).run(nbytes, fn, key=kind)


class DecodeSession:
    """Everything CPU decoding tunes, for one model (see the module docstring).

    ``native``: the C decode step (default: on unless ``GENCRAFT_NATIVE=0``); ``fast_linear``: the
    BLAS/oneDNN products (off: ``F.linear``, for an A/B); ``threads``: fix every product's thread
    count (default ``GENCRAFT_DECODE_THREADS``, else measured); ``int8``: the C step multiplies by
    8-bit copies of a float32 model's matrices (one scale per row, :func:`native.quantize_q8`, made
    once): a quarter of the bytes a step reads; prompts, batches and the PyTorch path keep float32.
    """

    def __init__(self, model: Any, *, native: bool = True, fast_linear: bool = True,
                 threads: int | None = None, int8: bool = False) -> None:
        self.native = native
        self.int8 = int8
        self._q8: dict[tuple[int, tuple[int, ...]], tuple[int, torch.Tensor]] = {}  # weight -> (version, q8 copy)
        self._packed: dict[Any, tuple[int | None, torch.Tensor]] = {}  # weight -> (version, packed copy)
        self.fast_linear = fast_linear
        forced = os.environ.get("GENCRAFT_DECODE_THREADS", "").strip()
        self.threads = threads if threads is not None else (int(forced) if forced.isdigit() else 0)
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._model = weakref.ref(model) if _weakrefable(model) else (lambda: model)
        self.native_threads = 1  # the C step's thread count, set by its tuner
        self.native_rows_threads = 1  # the multi-row C step's, set by its own tuner
        rows = os.environ.get("GENCRAFT_NATIVE_ROWS", "").strip()  # an A/B knob (bench/serve.py): 0 = off
        self.native_rows = (int(rows) if rows.isdigit() else NATIVE_ROWS) if native else 0
        self._tuners: dict[str, ThreadTuner] = {}
        # module -> (key of the weights it was made from, derived data); strong references to the
        # modules only (never the model itself, which keys this session weakly)
        self._derived: dict[Any, dict[str, tuple[Any, Any]]] = {}
        self._plans: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # KV cache -> Plan | False
        self._huge: tuple[int, bool] | None = None  # (first parameter's address, moved?)
        self._local = threading.local()

    # -- activation on the calling thread

    def __enter__(self) -> DecodeSession:
        loc = self._local
        depth = getattr(loc, "depth", 0)
        if depth == 0:
            loc.token = _ACTIVE.set(self)
            loc.saved = 0
            on_cpu, dtype = _model_dtype(self._model())
            # torch's own ops run on one thread while decoding: the products bring their threads, and
            # the ops left to torch at batch 1 are too small to split (docs/performance.md)
            if on_cpu and dtype in (torch.float32, torch.bfloat16):
                loc.saved = _omp.get()
                _omp.set(1)
                for t in self._tuners.values():  # this thread's settings are not what they last set
                    t.applied = 0
        loc.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        loc = self._local
        depth = getattr(loc, "depth", 0)
        if depth == 0:  # an abandoned generator closed on another thread: nothing of this one to undo
            return
        loc.depth = depth - 1
        if depth == 1:
            if loc.saved:
                _omp.set(loc.saved)
            try:
                _ACTIVE.reset(loc.token)
            except ValueError:  # closed in another context than it was entered in
                _ACTIVE.set(None)

    # -- what the fast paths keep

    def tuner(self, kind: str) -> ThreadTuner:
        """The session's tuner for ``kind``: "blas" (numpy's products), "torch" (oneDNN's, a batch),
        "prompt" (oneDNN's, a prompt's rows, and its attention), "attention" (a batch's attention),
        "native" (a whole C step a call), "native_rows" (a whole multi-row C step a call), "speech" (a voice's acoustic model or vocoder on one
        sentence's frames)."""
        t = self._tuners.get(kind)
        if t is None:
            busy = _other_process_running()
            if kind == "native":  # a whole decode step a call: windows of 8 steps, not 64
                # a probe costs at most two steps (a losing one stops there), so a machine that looked
                # busy at one instant only decides where to start, not how long before trying the other
                t = ThreadTuner(self.cores, self._set_native_threads, fixed=self.threads, window=8,
                                start=1 if busy else self.cores)
            elif kind == "native_rows":  # a whole multi-row C step a call
                t = ThreadTuner(self.cores, self._set_native_rows_threads, fixed=self.threads, window=8,
                                start=1 if busy else self.cores)
            elif kind == "speech":  # whole model calls on a sentence's frames (a voice): windows of 4 calls
                t = ThreadTuner(self.cores, _omp.set, fixed=self.threads, busy=busy, restore=True, window=4,
                                start=1 if busy else self.cores)
            elif kind == "blas":
                t = ThreadTuner(self.cores, _blas.set, fixed=self.threads, busy=busy)
            else:
                t = ThreadTuner(self.cores, _omp.set, fixed=self.threads, busy=busy, restore=True)
            self._tuners[kind] = t
        return t

    def _set_native_threads(self, n: int) -> None:
        self.native_threads = n

    def _set_native_rows_threads(self, n: int) -> None:
        self.native_rows_threads = n

    def derived(self, module: Any, name: str, key: Any, make: Callable[[], Any]) -> Any:
        """Data derived from ``module``'s weights (``key`` names the weights it was made from: a new
        key, e.g. replaced or written weights, makes it again)."""
        per = self._derived.get(module)
        if per is None:
            per = self._derived[module] = {}
        hit = per.get(name)
        if hit is None or hit[0] != key:
            hit = per[name] = (key, make())
        return hit[1]

    # -- the products

    def linear(self, m: Any, x: torch.Tensor, out_in: bool = True, gelu: bool = False) -> torch.Tensor:
        """``m``'s product ``x @ W.T + b`` on the fast path for its dtype and row count (``out_in``:
        W is ``[out, in]`` as in ``nn.Linear``; False: ``[in, out]``, ``transformers``' float32 Conv1D);
        ``gelu``: then the tanh GELU (fused into oneDNN's product where it runs there)."""
        params = m._parameters  # not through nn.Module.__getattr__, which is slow (docs/performance.md)
        if "weight" in params and "bias" in params:
            w, b = params["weight"], params["bias"]
        else:  # a parametrized weight (e.g. spectral norm) is computed by the attribute
            w, b = m.weight, m.bias
        if x.dtype == torch.float32 and w.dtype == torch.float32:
            rows = x.numel() // x.shape[-1]
            if out_in and rows > 1:  # batches and prompts: BLAS would re-pack the weights every call
                return self._onednn(m, x, w, b, BATCH_ROWS, rows, gelu)
            y = self._blas(m, x, w, b, out_in)
        elif x.dtype == torch.bfloat16 and w.dtype == torch.bfloat16:
            return self._onednn(m, x, w, b, 1, x.numel() // x.shape[-1], gelu)
        else:
            y = F.linear(x, w, b)
        return F.gelu(y, approximate="tanh") if gelu else y

    def _blas(self, m: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out_in: bool) -> torch.Tensor:
        # numpy views share the parameters' memory: only a new tensor needs a new view
        key = (w.data_ptr(), 0 if b is None else b.data_ptr())
        wt, bias, nbytes = self.derived(m, "numpy", key, lambda: (
            w.detach().numpy().T if out_in else w.detach().numpy(),
            None if b is None else b.detach().numpy(), w.numel() * 4))
        a = x.detach().numpy()
        rows = a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a
        out = self.tuner("blas").run(nbytes, lambda: rows @ wt)
        if bias is not None:
            out += bias
        return torch.from_numpy(out.reshape(*a.shape[:-1], out.shape[-1]) if a.ndim != 2 else out)

    def _onednn(self, m: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, batch: int, rows: int,
                gelu: bool = False) -> torch.Tensor:
        key = (w.data_ptr(), w.dtype, None if w.is_inference() else w._version)
        packed = self.derived(m, f"onednn{batch}", key,
                              lambda: torch.ops.mkldnn._reorder_linear_weight(w.detach(), batch_size=batch))
        bias = None if b is None else b.detach()
        nbytes = w.numel() * w.element_size()
        post = ("gelu", "tanh") if gelu else ("none", "")

        def product() -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, post[0], [], post[1])

        if rows <= BATCH_ROWS:  # decoding a batch: bound by reading the weights
            return self.tuner("torch").run(nbytes, product)
        # a prompt: compute-bound, its cost grows with the rows (prompts of any length share a tuner)
        return self.tuner("prompt").run(nbytes * rows, product, key=nbytes)

    # -- the C step

    def native_step(self, model: Any, token_ids: torch.Tensor, cache: Any) -> torch.Tensor | None:
        """Logits ``[B, V]`` for one token per row after ``cache`` (advancing it) by the C step, or None
        to take the PyTorch path (switched off, not built here, or a model/cache it cannot take).

        One row without padding takes the single-row step; a batch (or a padded row) of up to
        ``native_rows`` rows takes the multi-row step (:func:`native.run_rows`: each weight read once
        for every row, each row's attention over its own positions), float32 or bfloat16 weights."""
        if not self.native or torch.is_grad_enabled():
            return None
        B = token_ids.shape[0]
        one = B == 1 and cache.offset is None
        if not one and (B > self.native_rows or self.int8):
            return None
        lib = native.library()
        if lib is None:
            return None
        plan = self._plans.get(cache)  # one per (cache, model): a generation, or a running batch
        if plan is False:  # this cache was found unsuitable
            return None
        if plan is None or plan.model_id != id(model) or plan.k is not cache.k or plan.v is not cache.v:
            try:
                if not native.supports(model, cache):
                    raise ValueError("not a float32/bfloat16 CPU cache of a model without unmerged adapters")
                if not self.int8:  # 8-bit decoding reads its own copies, not the model's weights
                    self.huge_pages(model)
                plan = native.Plan(model, cache, q8=self._q8_copy if self.int8 else None,
                                   pack=None if one else self._packed_copy)
            except ValueError as e:
                log.info("native decode step not used (%s)", e)
                plan = False
            self._plans[cache] = plan
            if plan is False:
                return None
        logits = torch.empty(B, plan.vocab, dtype=torch.float32)
        pos = cache.length
        if one:
            token = int(token_ids)  # its one element, without an indexing op
            ok = self.tuner("native").run(plan.nbytes, lambda: native.run(lib, plan, token, pos, self.native_threads,
                                                                          logits), key="native")
        else:
            tokens = token_ids[:, 0].to(torch.int32)
            if cache.offset is None:
                lo = torch.zeros(B, dtype=torch.int32)
                emb = torch.full((B,), pos, dtype=torch.int32)
            else:  # left padding: row b's real positions start at offset[b] (its position embedding at 0)
                lo = cache.offset.to(torch.int32)
                emb = (pos - lo).clamp_(min=0)
            # a batch's step costs about its rows' products: timed per byte of weights times rows
            ok = self.tuner("native_rows").run(plan.nbytes * B, lambda: native.run_rows(
                lib, plan, tokens, emb, lo, pos, self.native_rows_threads, logits), key=("rows", B))
        if not ok:
            raise ValueError(f"a token id is outside the vocabulary (0..{plan.vocab - 1}) "
                             f"or position {pos} is beyond the model's context")
        cache.length += 1
        return logits

    def _packed_copy(self, w: torch.Tensor) -> torch.Tensor:
        """The multi-row step's packed copy of weight ``w`` (:func:`native.pack_rows`; made again when the
        weights change: their version moves). A batch's plans share it."""
        key = (w.data_ptr(), tuple(w.shape), w.dtype)
        version = None if w.is_inference() else w._version
        hit = self._packed.get(key)
        if hit is None or hit[0] != version:
            hit = self._packed[key] = (version, native.pack_rows(w))
        return hit[1]

    def _q8_copy(self, w: torch.Tensor) -> torch.Tensor:
        """The q8 copy of weight ``w`` (made again when the weights change: their version moves)."""
        key = (w.data_ptr(), tuple(w.shape))
        hit = self._q8.get(key)
        if hit is None or hit[0] != w._version:
            hit = self._q8[key] = (w._version, native.quantize_q8(w))
        return hit[1]

    def huge_pages(self, model: Any) -> bool:
        """Move ``model``'s weights into 2 MiB pages once (:func:`native.huge_page_weights`); True if they were."""
        params = list(model.parameters())
        key = params[0].data_ptr() if params else 0
        if self._huge is None or self._huge[0] != key:
            done = native.huge_page_weights(model)
            self._huge = (params[0].data_ptr() if params else 0, done)
        return self._huge[1]


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _model_dtype(model: Any) -> tuple[bool, torch.dtype | None]:
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if params is not None else None
    if p is None:
        return False, None
    return p.device.type == "cpu", p.dtype


class ThreadTuner:
    """Runs products with one thread or ``many``, whichever its own timings say is faster now.

    It times windows of calls (seconds per byte of weights over ``window`` calls, a few decode
    steps' mix of shapes) in the current setting, now and then probes the other setting for one
    window and keeps it if it was clearly faster (``WIN``); after a probe that lost (``LOSING``) it
    waits twice as long before the next one, and a probe that is losing stops early, so a loaded
    machine pays little; a window of the split setting far slower than its average (``SLOWER``:
    another process took a core) probes one thread at once, so long gaps cost no slow stretch. It
    starts on one thread, the setting that is never a disaster (``start``: a tuner whose calls are
    whole decode steps starts on all cores when the machine looks idle, or its first window of steps
    would all run on one). Products under ``SPLIT_MIN`` bytes of weights (a small model's layers,
    which sit in cache) always run on one thread: splitting them gains little and risks the stalls
    of a core another process holds. Results do not depend on the choice: each output element is
    reduced in the same order with 1 or 2 threads (tests check the tokens match).
    """

    WINDOW = 64  # calls per measurement
    BASE_GAP, MAX_GAP = 6, 192  # windows between probes
    SPLIT_MIN = 512 * 1024
    # A probe 1.2x slower has lost: a memory-bound decode step on one core of two runs only 1.2-1.4x
    # slower, and probes that stopped at 1.5x ran whole windows every 6 (124M bf16 in the engine: 16-42
    # of 127 steps on one thread; docs/performance.md). A probe must win by 10% to be kept: against an
    # average that one stalled step raised, a slower setting can look faster for a window.
    LOSING, WIN, SLOWER = 1.2, 1.1, 1.5

    def __init__(self, many: int, set_threads: Callable[[int], None], fixed: int = 0, busy: bool = False,
                 restore: bool = False, window: int = WINDOW, start: int = 1) -> None:
        self.many = many
        self.window = window
        self.set_threads = set_threads
        # ``restore``: go back to one thread after each split call. For torch's pool, whose threads
        # also run every small op between the products: waking a sleeping pool for a tiny op costs
        # far more than the op (docs/performance.md); switching costs a fraction of a microsecond.
        self.restore = restore
        self.mode = fixed or start
        self.fixed = fixed
        self.applied = 0
        self.cost: dict[int, float] = {}  # seconds per byte, moving average per setting
        # ``busy``: the machine looked loaded when we started; probe late (a probe of a split that
        # stalls also leaves BLAS's worker spinning for a while, slowing the next steps)
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
        if (self.probing and self.n >= max(2, self.window // 8)
                and self.secs > self.LOSING * self.cost[self.base] * self.bytes):
            # losing (one thread on an idle machine, a split waiting on a busy core): stop now,
            # instead of paying a whole window of slow calls
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
            if c * self.WIN < base_cost:
                self.cost[self.mode] = c
                self.gap = self.BASE_GAP
            else:
                self.mode = self.base
                self.gap = min(self.gap * 2, self.MAX_GAP) if c > self.LOSING * base_cost else self.BASE_GAP
            self.left = self.gap
            return
        old = self.cost.get(self.mode)
        self.cost[self.mode] = c if old is None else 0.7 * old + 0.3 * c
        self.left -= 1
        if old is not None and self.mode == self.many and c > self.SLOWER * old:
            self.left = 0  # the split slowed down: another process may hold a core now
        if self.left <= 0:
            self.base, self.mode, self.probing = self.mode, (1 if self.mode != 1 else self.many), True


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


class _Pool:
    """``get``/``set`` of a thread pool's size, found once (the libraries are process resources)."""

    def __init__(self, find: Callable[[], tuple[Callable[[], int], Callable[[int], None]]]) -> None:
        self._find = find
        self._fns: tuple[Callable[[], int], Callable[[int], None]] | None = None

    def _get_fns(self) -> tuple[Callable[[], int], Callable[[int], None]]:
        if self._fns is None:
            self._fns = self._find()
        return self._fns

    def get(self) -> int:
        return self._get_fns()[0]()

    def set(self, n: int) -> None:
        self._get_fns()[1](n)


def _find_omp() -> tuple[Callable[[], int], Callable[[int], None]]:
    """The calling thread's thread count for torch's ops -- OpenMP's, in the runtime torch uses
    (libgomp in Linux wheels), and MKL's thread-local one where torch has MKL -- so that a session
    changes only its own thread's setting, as ``torch.set_num_threads`` would minus the process-wide
    default; that setter itself where the runtime is not found.

    The getter is torch's: it reads the calling thread's OpenMP count, and first lets torch give a
    thread it has not seen its count (which would otherwise overwrite ours later)."""
    try:
        from threadpoolctl import ThreadpoolController

        torch_dir = os.path.dirname(torch.__file__)
        libs = [lib for lib in ThreadpoolController().select(user_api="openmp").lib_controllers
                if lib.filepath.startswith(torch_dir)]
        if libs:
            omp = ctypes.CDLL(libs[0].filepath).omp_set_num_threads
            omp.argtypes = [ctypes.c_int]
            mkl = None
            cpu = os.path.join(torch_dir, "lib", "libtorch_cpu.so")
            if torch.backends.mkl.is_available() and os.path.exists(cpu):
                # the C entry point (by value); the lower-case names are the Fortran one (by pointer)
                mkl = getattr(ctypes.CDLL(cpu), "MKL_Set_Num_Threads_Local", None)
                if mkl is not None:
                    mkl.argtypes, mkl.restype = [ctypes.c_int], ctypes.c_int

            def put(n: int) -> None:
                omp(n)
                if mkl is not None:
                    mkl(n)

            return torch.get_num_threads, put
    except (ImportError, OSError, AttributeError) as e:
        log.info("torch's OpenMP runtime not found (%s): decode threads set process-wide", e)
    return torch.get_num_threads, torch.set_num_threads


def _find_blas() -> tuple[Callable[[], int], Callable[[int], None]]:
    """The size of the BLAS pool numpy uses (a no-op if threadpoolctl cannot find it)."""
    import numpy as np
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    npdir = os.path.dirname(np.__file__).rsplit(os.sep, 1)[0]
    libs = [lib for lib in libs if lib.filepath.startswith(npdir)] or libs
    if not libs:
        return (lambda: 1), (lambda n: None)
    return (lambda: libs[0].num_threads), libs[0].set_num_threads


_omp = _Pool(_find_omp)
_blas = _Pool(_find_blas)


__all__ = ["BATCH_ROWS", "DecodeSession", "ThreadTuner", "active", "session", "tuned"]
