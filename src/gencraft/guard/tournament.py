"""A distortion-free text watermark: tournament sampling (Dathathri et al., 2024, "SynthID-Text").

At every step a keyed hash of the previous ``context_width`` tokens gives each token ``layers``
pseudo-random bits ``g_1..g_m`` ("g-values"). Sampling runs a tournament: draw ``2^m`` candidates
from the model's distribution ``p``, pair them up, keep the one with the larger ``g_1`` (a fair coin
on ties), pair the winners up again on ``g_2``, and so on; the last winner is the token. The
tournament is never run candidate by candidate: one layer maps a distribution to its winner's
distribution in closed form,

    p'(x) = p(x) * (1 + g(x) - P1),   P1 = sum of p over the tokens with g = 1,

so the sampler reweights ``p`` ``m`` times and then draws one token from the result with the
sequence's own seeded uniform number (the engine's inverse-CDF draw). Averaged over the key,
``E[p'(x)] = p(x)`` at every layer: the output distribution of each token is unchanged in
expectation ("distortion-free"), unlike the green list, which adds ``delta`` to a quarter of the
logits and costs perplexity. Because the draw keeps its own randomness, the same seed gives the
same text and different seeds (and the ``n`` samples of one prompt) give different texts: no
seed or sample index has to be mixed into the key, so detection needs the key alone.

Repeated contexts. Two steps with the same context see the same g-values; reweighting both would
correlate them (a text repeating itself would drift toward the key and its detection score would
count the same evidence twice). So a sequence watermarks a context only the first time it meets
it and samples plainly from ``p`` after that; detection scores exactly those positions (the first
occurrence of each context in the text), so repeated n-grams never inflate the score.

Detection. A scored position contributes its g-values; without the watermark they are fair,
independent coins (distinct contexts and tokens hash apart), so the weighted sum
``S = sum_t sum_l w_l g_l`` has mean ``N/2 sum w`` and variance ``N/4 sum w^2`` and the p-value is
its normal upper tail. With the watermark each layer lifts ``E[g]`` above 1/2 by ``P1 (1 - P1)``
of the distribution it sees, up to 1/4; the lift fades layer after layer as the tournament
concentrates the distribution, the faster the less entropy a model has, hence decreasing weights.
A model that is nearly deterministic (a memorized text, greedy-like low temperature) gives the
tournament nothing to choose between: no scheme can mark what is not random (bench/guard.py).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from gencraft.generate.core import draw

LAYERS = 16
CONTEXT_WIDTH = 3
SCHEME = "tournament"


def layer_weights(layers: int) -> np.ndarray:
    """Detection weights: linearly decreasing (later layers see less entropy, so carry less signal)."""
    return np.linspace(1.0, 1.0 / layers, layers)


class Tournament:
    """The g-values of one key: ``layers`` keyed bits for every (context, token)."""

    def __init__(self, key: bytes, vocab_size: int, *, layers: int = LAYERS,
                 context_width: int = CONTEXT_WIDTH) -> None:
        if not 1 <= layers <= 64:
            raise ValueError("layers must lie in 1..64 (one 64-bit word per token holds them)")
        if context_width < 1:
            raise ValueError("context_width must be >= 1")
        self.key = key
        self.vocab_size = int(vocab_size)
        self.layers = int(layers)
        self.context_width = int(context_width)
        rng = np.random.default_rng(np.frombuffer(hmac.new(key, b"tournament-tokens", hashlib.sha256).digest(),
                                                  np.uint32))
        self._token_words = rng.integers(0, 2**64, size=self.vocab_size, dtype=np.uint64, endpoint=False)
        self._seed = lru_cache(maxsize=1 << 16)(self._seed_uncached)
        self.weights = layer_weights(self.layers)

    @property
    def params(self) -> dict:
        """The manifest's description of the scheme (never the key)."""
        return {"scheme": SCHEME, "layers": self.layers, "context_width": self.context_width}

    def _seed_uncached(self, context: tuple[int, ...]) -> int:
        msg = b"".join(int(t).to_bytes(4, "little", signed=True) for t in context)
        return int.from_bytes(hmac.new(self.key, msg, hashlib.sha256).digest()[:8], "little")

    def words(self, context: tuple[int, ...], tokens: np.ndarray) -> np.ndarray:
        """``uint64[len(tokens)]``: bit ``l`` of word ``i`` is ``g_{l+1}(context, tokens[i])``.

        Ids at or past the vocabulary (a model's padded output rows) get fixed words; they are
        never sampled when the tokenizer does not know them."""
        tokens = np.asarray(tokens, dtype=np.int64)
        w = self._token_words[np.minimum(tokens, self.vocab_size - 1)]
        with np.errstate(over="ignore"):  # splitmix64's finalizer: every output bit depends on every input bit
            x = (w ^ np.uint64(self._seed(context))) * np.uint64(0xBF58476D1CE4E5B9)
            x ^= x >> np.uint64(31)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(29)
        return x

    def gvalues(self, context: tuple[int, ...], token: int) -> np.ndarray:
        """``float64[layers]``: the g-values of one token after ``context``."""
        word = self.words(context, np.array([token]))[0]
        return ((word >> np.arange(self.layers, dtype=np.uint64)) & np.uint64(1)).astype(np.float64)


def reweight(probs: np.ndarray, words: np.ndarray, layers: int) -> np.ndarray:
    """The tournament's winner distribution: ``probs`` ``[n, K]`` (float64, rows summing to 1),
    ``words`` ``[n, K]`` the tokens' g-value words; ``layers`` closed-form matches in turn."""
    p = probs.copy()
    one = np.uint64(1)
    for layer in range(layers):
        g = ((words >> np.uint64(layer)) & one).astype(np.float64)
        p1 = (p * g).sum(-1, keepdims=True)
        p *= 1.0 + g - p1
    return p


def context_of(row: Sequence[int], width: int) -> tuple[int, ...]:
    """The last ``width`` real (non-padding) ids of a row."""
    real = [int(t) for t in row[-width:] if t >= 0]
    return tuple(real)


class TournamentSampler:
    """The per-sequence sampler of the sampling core (``GenerationConfig(sampler=...)``): the
    tournament over the row's final distribution, then the sequence's own seeded draw.

    Holds the contexts it has already watermarked (see the module docstring); one object per
    sequence, made by :meth:`TournamentWatermark.__call__` from the sequence's seed."""

    reads_ids = True

    def __init__(self, rule: Tournament, seed: int, device: torch.device | str | None = None) -> None:
        self.rule = rule
        self.device = torch.device(device or "cpu")
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self.seen: set[tuple[int, ...]] = set()

    def choose(self, probs: np.ndarray, context: tuple[int, ...], tokens: np.ndarray) -> np.ndarray:
        """This row's distribution to draw from: reweighted on a context's first occurrence (only the
        tokens with a probability take part: filtered ones stay at zero, and it is cheaper)."""
        if len(context) < self.rule.context_width or context in self.seen:
            return probs
        self.seen.add(context)
        live = np.flatnonzero(probs > 0)
        out = np.zeros_like(probs)
        out[live] = reweight(probs[live][None], self.rule.words(context, tokens[live])[None], self.rule.layers)[0]
        return out

    @staticmethod
    def sample(samplers: Sequence[TournamentSampler], probs: torch.Tensor, ids: torch.Tensor,
               tokens: torch.Tensor | None) -> torch.Tensor:
        """The chosen column of each row (the sampling core's sampler protocol)."""
        p = probs.detach().to("cpu", torch.float64).numpy()
        p = p / p.sum(-1, keepdims=True)
        toks = (np.broadcast_to(np.arange(p.shape[1]), p.shape) if tokens is None
                else tokens.detach().cpu().numpy())
        rows = ids.detach().cpu().tolist()
        q = np.stack([s.choose(p[b], context_of(rows[b], s.rule.context_width), toks[b])
                      for b, s in enumerate(samplers)])
        u = torch.cat([torch.rand(1, generator=s.gen, device=s.device, dtype=torch.float64) for s in samplers])
        return draw(torch.from_numpy(q).to(probs.device), u.to(probs.device))


class TournamentWatermark:
    """What a generator samples with: ``GenerationConfig(sampler=watermark)``; called with a
    sequence's seed it makes that sequence's :class:`TournamentSampler`. Greedy decoding and beam
    search make no draw, so they carry no tournament mark (:func:`watermark_in`)."""

    def __init__(self, key: bytes, vocab_size: int, *, layers: int = LAYERS,
                 context_width: int = CONTEXT_WIDTH) -> None:
        self.rule = Tournament(key, vocab_size, layers=layers, context_width=context_width)

    @property
    def params(self) -> dict:
        return self.rule.params

    def __call__(self, seed: int) -> TournamentSampler:
        return TournamentSampler(self.rule, seed)


@dataclass
class TournamentDetection:
    """Detector output: the weighted g-value score, its z and one-sided p-value, how many positions
    were scored (first occurrences of their context) and the mean g-value of each layer."""

    z: float
    p_value: float
    score: float
    scored: int
    layer_means: list[float]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def scored_positions(ids: Sequence[int], width: int) -> list[tuple[tuple[int, ...], int]]:
    """``(context, token)`` of every position whose context occurs there for the first time."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for t in range(width, len(ids)):
        ctx = tuple(int(i) for i in ids[t - width:t])
        if ctx in seen:
            continue
        seen.add(ctx)
        out.append((ctx, int(ids[t])))
    return out


def detect(ids: Sequence[int], rule: Tournament) -> TournamentDetection:
    """Score token ids for ``rule``'s key (see the module docstring)."""
    pairs = [(c, t) for c, t in scored_positions(list(ids), rule.context_width) if 0 <= t < rule.vocab_size]
    return detect_pairs(pairs, rule)


def detect_pairs(pairs: Sequence[tuple[tuple[int, ...], int]], rule: Tournament) -> TournamentDetection:
    """Score ``(context, token)`` pairs, each a draw the tournament could have keyed once."""
    n = len(pairs)
    if n == 0:
        return TournamentDetection(0.0, 1.0, 0.0, 0, [])
    g = np.stack([rule.gvalues(c, t) for c, t in pairs])  # [n, layers]
    w = rule.weights
    score = float((g @ w).sum())
    mean, sd = 0.5 * n * w.sum(), math.sqrt(0.25 * n * (w * w).sum())
    z = (score - mean) / sd
    return TournamentDetection(z, 0.5 * math.erfc(z / math.sqrt(2)), score, n, g.mean(0).round(4).tolist())


def draws(temperature: float = 1.0, num_beams: int = 1, top_k: int = 0) -> bool:
    """Whether decoding with these settings makes a random draw per token: greedy decoding (temperature
    0 or top-k 1) and beam search do not, so a tournament watermark (which keys the draw) leaves no mark."""
    return temperature != 0 and num_beams <= 1 and top_k != 1


def watermark_in(watermark: Any, config: Any = None, *, temperature: float = 1.0, num_beams: int = 1,
                 top_k: int = 0) -> Any:
    """The watermark a generation really samples with: ``watermark``, or ``None`` for a tournament when
    the decoding (``config``, a ``GenerationConfig``, or the keyword settings) makes no random draw
    (:func:`draws`); what :func:`release` records. The green list biases the logits, so it marks greedy
    output too."""
    if config is not None:
        temperature, num_beams, top_k = config.temperature, config.num_beams, config.top_k
    if isinstance(watermark, TournamentWatermark) and not draws(temperature, num_beams, top_k):
        return None
    return watermark


# --- tile grids (game maps) ----------------------------------------------------------------------

GRID_SCHEME = "grid-tournament"
GRID_VOCAB = 1 << 16  # a tile is a character; its id is its code point's low 16 bits


def grid_context(grid: Sequence[Sequence[str]], y: int, x: int) -> tuple[int, ...]:
    """The key context of cell ``(y, x)``: its position and the four neighbours a scanline sampler
    has already placed (left, up-left, up, up-right; -1 outside the grid). The position makes every
    cell's context its own, so no draw repeats another's g-values (a map is mostly repeated
    neighbourhoods: walls next to walls)."""
    h, w = len(grid), len(grid[0])

    def at(yy: int, xx: int) -> int:
        return ord(grid[yy][xx]) & 0xFFFF if 0 <= yy < h and 0 <= xx < w else -1

    return (y, x, at(y, x - 1), at(y - 1, x - 1), at(y - 1, x), at(y - 1, x + 1))


class GridWatermark:
    """The tournament for tile grids drawn cell by cell in scanline order (``apps.maps``): each cell's
    distribution over tiles is reweighted by the key's g-values at :func:`grid_context`, then drawn
    with the map's own seeded random number, so the map's tiles are distributed as without it, in
    expectation over keys, and the same seed gives the same map."""

    def __init__(self, key: bytes, *, layers: int = LAYERS) -> None:
        self.rule = Tournament(key, GRID_VOCAB, layers=layers, context_width=6)

    @property
    def params(self) -> dict:
        return {"scheme": GRID_SCHEME, "layers": self.rule.layers}

    def reweight(self, probs: np.ndarray, tiles: Sequence[str], context: tuple[int, ...]) -> np.ndarray:
        """``probs`` over ``tiles`` (float64, summing to 1) as the tournament's winner distribution."""
        words = self.rule.words(context, np.array([ord(t) & 0xFFFF for t in tiles]))
        return reweight(np.asarray(probs, dtype=np.float64)[None], words[None], self.rule.layers)[0]


def detect_grid(grids: Sequence[Sequence[Sequence[str]]], rule: Tournament,
                fixed: str = "SG") -> TournamentDetection:
    """Score tile grids: every cell but the ``fixed`` tiles (start and goal, placed after sampling)
    and a closed border (an outer ring of one tile is kept, never drawn)."""
    pairs = []
    for g in grids:
        h, w = len(g), len(g[0])
        ring = {g[y][x] for y in range(h) for x in range(w) if y in (0, h - 1) or x in (0, w - 1)}
        skip_ring = len(ring) == 1 and h > 2 and w > 2
        for y in range(h):
            for x in range(w):
                if g[y][x] in fixed or (skip_ring and (y in (0, h - 1) or x in (0, w - 1))):
                    continue
                ctx = grid_context(g, y, x)
                tile = ord(g[y][x]) & 0xFFFF
                if ctx[2] in (tile, -1) and ctx[4] in (tile, -1):
                    continue
                pairs.append((ctx, tile))
    return detect_pairs(pairs, rule)
