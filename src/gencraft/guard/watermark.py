"""Watermarks: a keyed green-list watermark for text, a keyed spread-spectrum watermark for images.

Text (Kirchenbauer et al., 2023). At every step the vocabulary is split by a keyed hash of the
previous ``context_width`` token(s): a fraction ``gamma`` of the tokens is "green" and gets
``delta`` added to its logit. The split is ``mix(seed(context) XOR word[token]) < gamma * 2^64`` (``word``: keyed random 64-bit words)
with ``seed(context)`` = the first 8 bytes of HMAC-SHA256(key, context ids) — one HMAC per row,
then a few vectorised integer operations over the whole ``[B, V]`` block. Detection counts green
tokens among the *unique* (context, token) pairs of a text (repeated n-grams would otherwise
inflate the score) and returns the one-sided z-score and its p-value; it works on token ids, so
any tokenizer (char, BPE, Hugging Face) works, and detection re-tokenizes the text with the
run's tokenizer.

Images. The luminance's whole-image DCT (orthonormal) is used in a band of low-middle
frequencies; a DCT index means the same spatial pattern at any resolution, so the band survives
resizing, and it lies below what JPEG quantizes away. Each payload bit owns a keyed random set of
band coefficients and a keyed ±1 chip sequence; embedding is *informed* (spread transform): the
projection of the coefficients on each bit's chip is moved to ``±margin`` rather than adding a
blind pattern, so the host image does not drown the bit and distortion stays small. Detection is
blind: the sign of each projection is the bit. Images of 32-79 pixels a side (sprites) use a lower
band; detection reads both bands. Keys: both derive from the watermark secret of
``gencraft keys init`` (HMAC with a "text"/"image" label).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from gencraft.errors import UsageError
from gencraft.guard import tournament
from gencraft.guard.tournament import TournamentWatermark


def derive_key(secret: bytes, label: str) -> bytes:
    """A sub-key of the watermark secret for one use ("text", "image")."""
    return hmac.new(secret, b"gencraft-watermark:" + label.encode(), hashlib.sha256).digest()


# --- text ----------------------------------------------------------------------------------------


class TextWatermark:
    """The green-list rule for one key: ``green_mask(contexts)`` and the seed of a context."""

    def __init__(self, key: bytes, vocab_size: int, *, gamma: float = 0.25, delta: float = 2.0,
                 context_width: int = 1) -> None:
        if not 0.0 < gamma < 1.0:
            raise ValueError("gamma must lie in (0, 1)")
        self.key = key
        self.vocab_size = int(vocab_size)
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.context_width = int(context_width)
        self._limit = np.uint64(min(int(gamma * 2.0**64), 2**64 - 1))
        # one keyed random 64-bit word per token id; a context's seed is XORed into all of them
        rng = np.random.default_rng(np.frombuffer(hmac.new(key, b"tokens", hashlib.sha256).digest(), np.uint32))
        self._token_words = rng.integers(0, 2**64, size=self.vocab_size, dtype=np.uint64, endpoint=False)
        self._seed = lru_cache(maxsize=1 << 16)(self._seed_uncached)
        self._mask = lru_cache(maxsize=512)(self._mask_uncached)

    def _seed_uncached(self, context: tuple[int, ...]) -> int:
        msg = b"".join(int(t).to_bytes(4, "little", signed=True) for t in context)
        return int.from_bytes(hmac.new(self.key, msg, hashlib.sha256).digest()[:8], "little")

    def _mix(self, words: np.ndarray, seed: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            x = (words ^ np.uint64(seed)) * np.uint64(0xBF58476D1CE4E5B9)
            x ^= x >> np.uint64(31)
            x *= np.uint64(0x94D049BB133111EB)
        return x < self._limit

    def _mask_uncached(self, context: tuple[int, ...]) -> np.ndarray:
        return self._mix(self._token_words, self._seed(context))

    def green_mask(self, contexts: list[tuple[int, ...]]) -> np.ndarray:
        """``bool[len(contexts), V]``: the green tokens after each context (the last 512 are cached)."""
        return np.stack([self._mask(c) for c in contexts])

    def is_green(self, context: tuple[int, ...], token: int) -> bool:
        return bool(self._mix(self._token_words[token:token + 1], self._seed(context))[0])


class WatermarkProcessor:
    """Logits processor ``(ids, logits) -> logits`` adding ``delta`` to the green tokens of each row.

    The context of a row is its last ``context_width`` non-padding ids (a row with none yet uses
    ``(-1,)``), so dropped or reordered rows need no state. Put it in
    ``GenerationConfig(processors=[...])``.
    """

    def __init__(self, key: bytes, vocab_size: int, *, gamma: float = 0.25, delta: float = 2.0,
                 context_width: int = 1) -> None:
        self.rule = TextWatermark(key, vocab_size, gamma=gamma, delta=delta, context_width=context_width)

    @property
    def params(self) -> dict:
        """The manifest's description of the rule (never the key)."""
        r = self.rule
        return {"scheme": "green-list", "gamma": r.gamma, "delta": r.delta, "context_width": r.context_width}

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        w = self.rule.context_width
        tail = ids[:, -w:].tolist() if ids.shape[1] else [[] for _ in range(ids.shape[0])]
        contexts = [tuple(t for t in row if t >= 0) or (-1,) for row in tail]
        mask = self.rule.green_mask(contexts)
        v = min(logits.shape[1], mask.shape[1])
        if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.is_contiguous():
            # numpy in place: one thread, no torch intra-op pool waking up for a cheap add
            view = logits.numpy()
            view[:, :v] += mask[:, :v] * np.float32(self.rule.delta)
        else:
            bias = torch.from_numpy(mask[:, :v].astype(np.float32) * np.float32(self.rule.delta))
            logits[:, :v] += bias.to(device=logits.device, dtype=logits.dtype)
        return logits


GAMMA = 0.25
DELTA = 2.0
CONTEXT_WIDTH = 1


SCHEMES = ("tournament", "green-list")  # the first is the default


def text_watermark(vocab_size: int, keys, scheme: str = SCHEMES[0]):
    """The text watermark of ``keys`` (a :class:`~gencraft.guard.keys.Keys`) by ``scheme``: the
    distortion-free tournament (a sampler) or the green list (a logits processor, delta 2).
    :meth:`gencraft.guard.ReleasePolicy.text_watermark` is how generators get it."""
    key = derive_key(keys.watermark_secret, "text")
    if scheme == "tournament":
        return TournamentWatermark(key, vocab_size)
    if scheme == "green-list":
        return WatermarkProcessor(key, vocab_size, gamma=GAMMA, delta=DELTA, context_width=CONTEXT_WIDTH)
    raise UsageError(f"watermark scheme {scheme!r}: use {' or '.join(SCHEMES)}", param="watermark_scheme")


def text_detector(vocab_size: int, keys, *, gamma: float = GAMMA, context_width: int = CONTEXT_WIDTH
                  ) -> TextWatermark:
    """The green-list rule of ``keys`` for detection."""
    return TextWatermark(derive_key(keys.watermark_secret, "text"), vocab_size, gamma=gamma,
                         context_width=context_width)


@dataclass
class TextDetection:
    """Detector output: z-score, one-sided p-value, counts, and the verdict at ``threshold``."""

    z: float
    p_value: float
    green: int
    scored: int
    gamma: float
    threshold: float
    detected: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def detect_ids(ids: list[int], rule: TextWatermark, *, threshold: float = 4.0) -> TextDetection:
    """Score token ids: green fraction among unique (context, token) pairs -> z, p."""
    w = rule.context_width
    pairs = {(tuple(ids[i - w:i]), ids[i]) for i in range(w, len(ids))}
    pairs = {(c, t) for c, t in pairs if 0 <= t < rule.vocab_size}
    n = len(pairs)
    if n == 0:
        return TextDetection(0.0, 1.0, 0, 0, rule.gamma, threshold, False)
    contexts = sorted({c for c, _ in pairs})
    index = {c: i for i, c in enumerate(contexts)}
    mask = rule.green_mask(contexts)
    green = int(sum(mask[index[c], t] for c, t in pairs))
    g = rule.gamma
    z = (green - g * n) / math.sqrt(n * g * (1 - g))
    p = 0.5 * math.erfc(z / math.sqrt(2))
    return TextDetection(z, p, green, n, g, threshold, z > threshold)


def detect_text(text: str, tokenizer, rule: TextWatermark, *, threshold: float = 4.0) -> TextDetection:
    """Re-tokenize ``text`` with the run's tokenizer and score it."""
    return detect_ids(list(tokenizer.encode(text)), rule, threshold=threshold)


ALPHA = 1e-4  # a text counts as watermarked at p <= ALPHA


def detect_with(ids: list[int], vocab_size: int, keys, block: dict | None, *, alpha: float = ALPHA) -> dict:
    """Score token ids with ``keys`` by the scheme a manifest's ``watermark`` block names:
    ``{"scheme", "detected", "p_value", "line", ...}``, detected at ``p <= alpha``. Without a block
    (a text copied out of its manifest) both schemes are tried and the smaller p-value is doubled."""
    if not block or not block.get("scheme"):
        results = [detect_with(ids, vocab_size, keys, {"scheme": s}, alpha=alpha) for s in SCHEMES]
        best = min(results, key=lambda r: r["p_value"])
        p = min(1.0, 2 * best["p_value"])
        return {**best, "p_value": p, "detected": p <= alpha, "line": best["line"] + " (either scheme: p doubled)"}
    scheme = block["scheme"]
    key = derive_key(keys.watermark_secret, "text")
    if scheme == "tournament":
        rule = tournament.Tournament(key, vocab_size, layers=int(block.get("layers", tournament.LAYERS)),
                                     context_width=int(block.get("context_width", tournament.CONTEXT_WIDTH)))
        t = tournament.detect(ids, rule)
        return {"scheme": scheme, **t.to_dict(), "detected": t.p_value <= alpha, "alpha": alpha,
                "line": f"z = {t.z:.2f}, p = {t.p_value:.2g} ({t.scored} positions scored)"}
    if scheme != "green-list":
        raise UsageError(f"unknown text watermark scheme {scheme!r} in the manifest", param="file")
    rule = text_detector(vocab_size, keys, gamma=float(block.get("gamma", GAMMA)),
                         context_width=int(block.get("context_width", CONTEXT_WIDTH)))
    det = detect_ids(ids, rule)
    return {"scheme": scheme, **det.to_dict(), "detected": det.p_value <= alpha, "alpha": alpha,
            "line": f"z = {det.z:.2f}, p = {det.p_value:.2g} ({det.green}/{det.scored} unique tokens green)"}


# --- images --------------------------------------------------------------------------------------

# DCT indices u, v in [lo, hi) with lo + 2 <= u + v < hi + 4. Images of at least 80 pixels a side
# use the wider band; smaller ones (sprites, 32-79 px) a lower one that a 0.5x resize still keeps.
BAND = (4, 40)
SMALL_BAND = (2, 16)


def band_for(width: int, height: int) -> tuple[int, int]:
    """The band an image of this size is marked in (raises ``ValueError`` below 32 pixels a side)."""
    side = min(width, height)
    if side >= 2 * BAND[1]:
        return BAND
    if side >= 2 * SMALL_BAND[1]:
        return SMALL_BAND
    raise ValueError(f"image is {width}x{height}; the image watermark needs at least {2 * SMALL_BAND[1]} "
                     "pixels a side")


@dataclass
class ImageDetection:
    """Bits read from an image, their agreement with the expected payload, and a binomial p-value."""

    bits: list[int]
    bit_accuracy: float
    p_value: float
    detected: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _dct2(x: np.ndarray) -> np.ndarray:
    from scipy.fft import dctn

    return dctn(x, norm="ortho")


def _idct2(x: np.ndarray) -> np.ndarray:
    from scipy.fft import idctn

    return idctn(x, norm="ortho")


def payload_bits(key: bytes, n_bits: int = 32) -> np.ndarray:
    """The default payload: ``n_bits`` bits derived from the key (so detection needs only the key)."""
    digest = hashlib.sha256(key + b"payload").digest()
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:n_bits].astype(np.int64)


def _layout(key: bytes, n_bits: int, band: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = band
    u, v = np.meshgrid(np.arange(lo, hi), np.arange(lo, hi), indexing="ij")
    keep = (u + v >= lo + 2) & (u + v < hi + 4)
    u, v = u[keep], v[keep]
    seed = hashlib.sha256(key + b"layout" + bytes(band)).digest()
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))
    order = rng.permutation(len(u))
    owner = np.empty(len(u), dtype=np.int64)
    owner[order] = np.arange(len(u)) % n_bits
    chips = rng.choice(np.array([-1.0, 1.0]), size=len(u))
    return u, v, owner, chips


def _luma(rgb: np.ndarray) -> np.ndarray:
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def embed_image(image, key: bytes, *, bits: np.ndarray | None = None, n_bits: int = 32,
                strength: float = 1.0):
    """Return a watermarked copy of a PIL image (RGB out; alpha kept). ``strength`` scales the margin."""
    from PIL import Image

    bits = payload_bits(key, n_bits) if bits is None else np.asarray(bits, dtype=np.int64)
    n_bits = len(bits)
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = rgb.shape[:2]
    u, v, owner, chips = _layout(key, n_bits, band_for(w, h))
    # target projection per bit: grows with sqrt(pixels), as a fixed per-pixel amplitude does
    margin = 6.0 * strength * math.sqrt(h * w) / 64.0
    out = rgb
    for _ in range(3):  # clipping to [0, 255] can undo part of a pass: repeat on the result
        coef = _dct2(_luma(out))[u, v]
        delta = np.zeros_like(coef)
        for k in range(n_bits):
            sel = owner == k
            s = chips[sel]
            proj = float(coef[sel] @ s) / math.sqrt(sel.sum())
            target = margin if bits[k] else -margin
            # move the projection to the target when it is short of it (informed embedding)
            if (bits[k] and proj < target) or (not bits[k] and proj > target):
                delta[sel] = (target - proj) * s / math.sqrt(sel.sum())
        if not delta.any():
            break
        c2 = np.zeros((h, w))
        c2[u, v] = delta
        out = np.clip(out + _idct2(c2)[..., None], 0, 255)
    out = out.round().astype(np.uint8)
    result = Image.fromarray(out, "RGB")
    if alpha is not None:
        result.putalpha(alpha)
    return result


def detect_image(image, key: bytes, *, bits: np.ndarray | None = None, n_bits: int = 32,
                 threshold: float = 1e-4) -> ImageDetection:
    """Read the bits of a (possibly recompressed or resized) image and compare them with the payload.

    The image may have been resized, so both bands are read and the better one is reported; its
    binomial p-value is doubled for that choice (Bonferroni)."""
    bits = payload_bits(key, n_bits) if bits is None else np.asarray(bits, dtype=np.int64)
    n_bits = len(bits)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    c = _dct2(_luma(rgb))
    h, w = rgb.shape[:2]
    best: ImageDetection | None = None
    for band in (BAND, SMALL_BAND):
        u, v, owner, chips = _layout(key, n_bits, band)
        ok = (u < h) & (v < w)
        proj = np.zeros(n_bits)
        np.add.at(proj, owner[ok], c[u[ok], v[ok]] * chips[ok])
        read = (proj > 0).astype(np.int64)
        matches = int((read == bits).sum())
        p = min(1.0, 2 * sum(math.comb(n_bits, m) for m in range(matches, n_bits + 1)) / 2.0**n_bits)
        if best is None or p < best.p_value:
            best = ImageDetection(read.tolist(), matches / n_bits, p, p < threshold)
    return best  # type: ignore[return-value]
