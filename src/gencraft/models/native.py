"""The GPT's batch-1 decode step in C (``gpt_decode.c``): building it, and what a step hands it.

``GPT.step`` hands a one-token step to the active decode session
(:meth:`gencraft.models.decode.DecodeSession.native_step`), which keeps a :class:`Plan` per KV cache
and calls :func:`run` (one sequence) or :func:`run_rows` (a batch's rows, continuous batching's
running batch: weights read once for every row, from copies packed by :func:`pack_rows`); everything
else (prompts, training, GPUs) stays in PyTorch. The C step reads the model's parameters and the KV cache in place, so prefill in PyTorch
and decoding in C share one cache.

The library is compiled once per machine with the system C compiler (``cc``, or ``$CC``) into
``GENCRAFT_HOME/cache/native`` (:func:`gencraft.paths.home`), named by a digest of the source, the
compiler flags and the CPU's feature flags, and written atomically (about a second). No compiler, a
failed build or ``GENCRAFT_NATIVE=0`` (the one switch, for users): decoding stays on the PyTorch
path (one log line says why).

Threads: the C step splits its matrix products over its own small pool; the session's ``native``
tuner measures per step whether one thread or all cores is faster right now.
After a single-row step returns, worker 1 of that pool reads the first layer's matrices (one byte a
cache line) while Python chooses the next token, so the next step finds them in the L3 cache; the
next step stops it (``GENCRAFT_PREFETCH=0``: off, for an A/B).

Weight types: float32, bfloat16 (the model's own parameters, read in place) and q8 (8-bit, one
float32 scale per row: :func:`quantize_q8`; copies the decode session derives once from a float32
model, while prompts keep the float32 weights). A new type is a new value of the ``dims`` flags the
C code reads, set in :class:`Plan`; :func:`supports` says which models and caches the step takes.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from pathlib import Path
from typing import Any

import torch

from gencraft import cbuild

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("gpt_decode.c")
CFLAGS = cbuild.CFLAGS
HEAD_PTRS, LAYER_PTRS = 8, 12  # gc_gpt_decode's pointer layout (see gpt_decode.c)

def cache_dir() -> Path:
    return cbuild.cache_dir()


_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
SIGNATURES: cbuild.Signatures = {
    "gc_gpt_decode": (_I, [_P, _P, _F, _I, _I, _I, _P]),
    "gc_gpt_decode_rows": (_I, [_P, _P, _P, _F, _I, _P, _P, _P, _I, _I, _P]),
    "gc_matmul": (_I, [_P, _P, _I, _I, _I, _I, _P, _P, _I]),
    "gc_matvec": (_I, [_P, _I, _I, _I, _P, _P, _I]),
    "gc_bf16_input": (_I, []),
    "gc_q8_vnni": (_I, []),
}


def library() -> Any:
    """The loaded C library, or None (not buildable here, or switched off): :func:`cbuild.load` with
    this module's ``CFLAGS`` and :func:`cache_dir` (tests build other variants through them)."""
    return cbuild.load(SOURCE, SIGNATURES, "decoding in PyTorch", cache_dir(), CFLAGS)


W_F32, W_BF16, W_Q8 = 0, 1, 2  # the C step's weight types
Q8_BLOCK = 64  # the input's quantization block: a q8 matrix's columns are a multiple of it


def quantize_q8(w: torch.Tensor) -> torch.Tensor:
    """A float ``[rows, cols]`` weight as the C step's q8 matrix (gpt_decode.c): one uint8 buffer of
    the weights as bytes ``round(w / s) + 128`` (row ``r`` at ``r * cols``), then, from the next
    64-byte boundary, the float32 row scales ``s = max|w_r| / 127``."""
    w = w.detach().float()
    rows, cols = w.shape
    scale = w.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).add_(128).to(torch.uint8)
    at = -(-rows * cols // 64) * 64
    buf = torch.zeros(at + 4 * rows, dtype=torch.uint8)
    buf[:rows * cols] = q.reshape(-1)
    buf[at:].view(torch.float32).copy_(scale)
    return buf


def dequantize_q8(buf: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The float32 weights a q8 buffer holds (what the q8 products multiply by)."""
    at = -(-rows * cols // 64) * 64
    scale = buf[at:at + 4 * rows].view(torch.float32)
    return (buf[:rows * cols].view(rows, cols).float() - 128.0) * scale[:, None]


PACK = 64  # output rows per block of a packed matrix (gpt_decode.c's PB)


def pack_rows(w: torch.Tensor) -> torch.Tensor:
    """A ``[rows, cols]`` weight as the multi-row step's packed matrix (gpt_decode.c): blocks of
    ``PACK`` output rows (the last padded with zeros), each stored column by column
    (``[blocks, cols, PACK]``), so a block's products read one stream and need no horizontal sums."""
    w = w.detach()
    rows, cols = w.shape
    padded = -(-rows // PACK) * PACK
    out = torch.zeros(padded, cols, dtype=w.dtype)
    out[:rows] = w
    return out.view(padded // PACK, PACK, cols).transpose(1, 2).contiguous()


class Plan:
    """What one (model, cache) pair hands the C step: dimensions, and the addresses of the
    parameters and cache buffers (kept alive here, with float32 copies of the small vectors).
    ``q8``: ``weight -> q8 buffer`` (the session's derived copies) to decode with 8-bit matrices;
    ``pack``: ``weight -> packed copy`` (:func:`pack_rows`, the session's) for the multi-row step."""

    def __init__(self, model: Any, cache: Any, q8: Any = None, pack: Any = None) -> None:
        cfg = model.config
        wdt = model.wte.weight.dtype
        keep: list[torch.Tensor] = []
        if q8 is not None and (wdt != torch.float32 or cfg.n_embd % Q8_BLOCK):
            raise ValueError(f"8-bit decoding needs float32 weights and n_embd a multiple of {Q8_BLOCK}")

        def addr(t: torch.Tensor | None, small: bool = False) -> int:
            if t is None:
                return 0
            t = t.detach()
            if small:
                t = t.float().contiguous()
            elif t.dtype != wdt or not t.is_contiguous():
                raise ValueError("weights must be contiguous and of one dtype")
            elif q8 is not None and t.dim() == 2 and t.data_ptr() != model.wpe.weight.data_ptr():
                t = q8(t)
            keep.append(t)
            return t.data_ptr()

        eps = {model.ln_f.eps, *(m.eps for b in model.h for m in (b.ln_1, b.ln_2))}
        if len(eps) != 1:
            raise ValueError("layer norms with different eps")
        self.eps = float(eps.pop())
        B = cache.k.shape[1]  # the cache's rows: one for gc_gpt_decode, B for gc_gpt_decode_rows
        self.rows = B
        self.scratch = torch.empty(B * (14 * cfg.n_embd + cfg.n_head * cache.max_len), dtype=torch.float32)
        ptrs = [addr(model.wte.weight), addr(model.wpe.weight), addr(model.ln_f.weight, True),
                addr(model.ln_f.bias, True), addr(model.lm_head.weight), cache.k.data_ptr(), cache.v.data_ptr(),
                self.scratch.data_ptr()]
        for b in model.h:
            a, m = b.attn, b.mlp
            ptrs += [addr(b.ln_1.weight, True), addr(b.ln_1.bias, True), addr(a.c_attn.weight),
                     addr(a.c_attn.bias, True), addr(a.c_proj.weight), addr(a.c_proj.bias, True),
                     addr(b.ln_2.weight, True), addr(b.ln_2.bias, True), addr(m.c_fc.weight),
                     addr(m.c_fc.bias, True), addr(m.c_proj.weight), addr(m.c_proj.bias, True)]
        assert len(ptrs) == HEAD_PTRS + cfg.n_layer * LAYER_PTRS
        self.keep = keep
        self.k, self.v = cache.k, cache.v  # the buffers the addresses are of (checked on every step)
        self.ptrs = torch.tensor(ptrs, dtype=torch.int64)
        n_keep = len(keep)
        self.packed: torch.Tensor | None = None
        if pack is not None:  # lm_head, then per layer c_attn, attn.c_proj, c_fc, mlp.c_proj
            mats = [model.lm_head.weight] + [w for b in model.h for w in (
                b.attn.c_attn.weight, b.attn.c_proj.weight, b.mlp.c_fc.weight, b.mlp.c_proj.weight)]
            copies = [pack(w.detach()) for w in mats]
            keep += copies
            self.packed = torch.tensor([c.data_ptr() for c in copies], dtype=torch.int64)
        wtype = W_Q8 if q8 is not None else W_BF16 if wdt == torch.bfloat16 else W_F32
        self.dims = torch.tensor([cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cache.max_len,
                                  wtype, int(cache.k.dtype == torch.bfloat16), model.wpe.weight.shape[0], B],
                                 dtype=torch.int64)
        self.vocab = cfg.vocab_size
        self.dims_at, self.ptrs_at = self.dims.data_ptr(), self.ptrs.data_ptr()  # what every step passes
        big = torch.uint8 if q8 is not None else wdt
        weights = {t.data_ptr(): t.numel() * t.element_size() for t in keep[:n_keep] if t.dtype == big}
        self.nbytes = sum(weights.values())  # what a step reads (a tied output layer once)
        self.model_id = id(model)


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGE = 2 << 20
HUGE_MIN = 128 << 20  # below this the gain does not pay for the copy (docs/performance.md)


def huge_page_weights(model: Any) -> bool:
    """Move ``model``'s parameters into one buffer backed by 2 MiB pages; True if it did.

    A decode step streams every weight once; in 4 KiB pages that is a TLB miss every 4 KiB, in 2 MiB
    pages one every 2 MiB. Linux gives anonymous memory huge pages only where asked
    (``transparent_hugepage`` in ``madvise`` mode, the default): PyTorch's allocator does not ask, so
    the weights are copied once into a mapping that does (docs/performance.md has the gain). The
    copy is paid once, at the model's first decode step (the kernel may have to compact memory to
    find free 2 MiB pages the first time). Parameters keep their
    identity (``.data`` is swapped, values equal), so optimizers, state dicts and the PyTorch path
    see no change. Skipped below ``HUGE_MIN`` bytes, for models in training (gradients held,
    ``train()`` mode), and where the kernel will not give huge pages on request. The decode session
    calls it once per set of weights (:meth:`~gencraft.models.decode.DecodeSession.huge_pages`).
    """
    params = list(model.parameters())
    done = False
    nbytes = sum(-(-p.numel() * p.element_size() // 64) * 64 for p in params)
    try:
        mode = THP_MODE.read_text()
    except OSError:
        mode = ""
    if ("[madvise]" in mode and nbytes >= HUGE_MIN and not model.training
            and all(p.is_cpu and p.grad is None and p.is_contiguous() for p in params)):
        try:
            mm = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as e:  # no room: the weights stay where they are
            log.info("no huge-page buffer for the weights (%s)", e)
        else:
            start = -ctypes.addressof(ctypes.c_char.from_buffer(mm)) % HUGE  # a 2 MiB boundary
            mm.madvise(mmap.MADV_HUGEPAGE, start, nbytes)
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors: training may follow
                buf = torch.frombuffer(mm, dtype=torch.uint8)  # holds ``mm`` for as long as a view lives
                off = start
                for p in params:
                    n = p.numel() * p.element_size()
                    t = buf[off:off + n].view(p.dtype).view(p.shape)
                    t.copy_(p.data)
                    p.data = t
                    off += -(-n // 64) * 64
            done = True
    return done


def supports(model: Any, cache: Any) -> bool:
    """Whether the C step can decode this model and cache (float32/bfloat16 on the CPU, no LoRA adapter
    left unmerged: the C step reads the base weights and would ignore it). One row without padding
    takes :func:`run`; a batch, or a row with left padding, :func:`run_rows`."""
    k = cache.k
    return (not getattr(model, "_lora_unmerged", False) and k.is_cpu and k.is_contiguous()
            and k.dtype in (torch.float32, torch.bfloat16) and cache.v.dtype == k.dtype and cache.v.is_contiguous()
            and model.wte.weight.dtype in (torch.float32, torch.bfloat16) and model.wte.weight.is_cpu
            and model.config.n_embd % model.config.n_head == 0)


def run(lib: Any, plan: Plan, token: int, pos: int, threads: int, logits: torch.Tensor) -> bool:
    """One C step: ``token`` at position ``pos`` into ``plan``'s cache, its logits into ``logits``
    (``[1, V]`` float32) on ``threads`` threads; False when the token or position is out of range."""
    return bool(lib.gc_gpt_decode(plan.dims_at, plan.ptrs_at, plan.eps, token, pos, threads, logits.data_ptr()))


def run_rows(lib: Any, plan: Plan, tokens: torch.Tensor, pos: torch.Tensor, lo: torch.Tensor, length: int,
             threads: int, logits: torch.Tensor) -> bool:
    """One C step for every row of ``plan``'s batch cache: ``tokens``, ``pos`` (each row's position
    embedding) and ``lo`` (its first real cache position), all ``[B]`` int32; every row writes position
    ``length`` and attends over ``lo[b]..length`` only; logits into ``logits`` (``[B, V]`` float32).
    False when a token or position is out of range. Weights float32 or bfloat16 (not q8); the products
    read ``plan``'s packed copies where it has them (:func:`pack_rows`), else the weights in place."""
    packed = None if plan.packed is None else plan.packed.data_ptr()
    return bool(lib.gc_gpt_decode_rows(plan.dims.data_ptr(), plan.ptrs.data_ptr(), packed, plan.eps, plan.rows,
                                       tokens.data_ptr(), pos.data_ptr(), lo.data_ptr(), length, threads,
                                       logits.data_ptr()))


def matmul(w: torch.Tensor, x: torch.Tensor, threads: int = 1, packed: bool = False) -> torch.Tensor:
    """``x @ w.T`` by the multi-row step's product (``w`` ``[out, in]`` float32 or bfloat16, contiguous;
    ``x`` ``[rows, in]`` float32), from the weights in place or (``packed``) from :func:`pack_rows`'s
    copy: the kernels on their own, for tests."""
    lib = library()
    if lib is None:
        raise RuntimeError("the native library is not available")
    if w.dtype not in (torch.float32, torch.bfloat16) or not w.is_contiguous() or w.dim() != 2:
        raise ValueError("w must be a contiguous 2-d float32 or bfloat16 tensor")
    x = x.detach().float().contiguous()
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must have shape (rows, {w.shape[1]}), got {tuple(x.shape)}")
    y = torch.empty(x.shape[0], w.shape[0], dtype=torch.float32)
    wp = pack_rows(w) if packed else None
    lib.gc_matmul(w.data_ptr(), None if wp is None else wp.data_ptr(), int(w.dtype == torch.bfloat16), w.shape[0],
                  w.shape[1], x.shape[0], x.data_ptr(), y.data_ptr(), threads)
    return y


def bf16_input() -> bool:
    """Whether the C step's bfloat16 products round their input to bfloat16 as well (CPUs with
    AVX512-BF16: one instruction per 32 weights); elsewhere the input stays float32."""
    lib = library()
    return bool(lib is not None and lib.gc_bf16_input())


def matvec(w: torch.Tensor, x: torch.Tensor, threads: int = 1, q8: bool = False) -> torch.Tensor:
    """``w @ x`` by the C step's matrix-vector product (``w`` ``[out, in]`` float32 or bfloat16,
    contiguous; ``x`` ``[in]`` float32): the kernel on its own, for tests and bandwidth checks.
    ``q8``: through its 8-bit product (``w`` float32, quantized here by :func:`quantize_q8`)."""
    lib = library()
    if lib is None:
        raise RuntimeError("the native library is not available")
    if w.dtype not in (torch.float32, torch.bfloat16) or not w.is_contiguous() or w.dim() != 2:
        raise ValueError("w must be a contiguous 2-d float32 or bfloat16 tensor")
    if q8 and w.shape[1] % Q8_BLOCK:
        raise ValueError(f"q8: w's columns must be a multiple of {Q8_BLOCK}")
    x = x.detach().float().contiguous()
    if x.shape != (w.shape[1],):
        raise ValueError(f"x must have shape ({w.shape[1]},), got {tuple(x.shape)}")
    y = torch.empty(w.shape[0], dtype=torch.float32)
    wt, code = (quantize_q8(w), W_Q8) if q8 else (w, int(w.dtype == torch.bfloat16))
    if not lib.gc_matvec(wt.data_ptr(), code, w.shape[0], w.shape[1], x.data_ptr(), y.data_ptr(), threads):
        raise MemoryError("gc_matvec could not allocate its buffer")
    return y
