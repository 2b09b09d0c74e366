"""A logits processor that keeps generated event sequences well-formed.

``MusicGrammar(tokenizer, bars=16)`` is an ordinary processor ``(ids, logits) -> logits``: it reads
each row's events so far and sets to ``-inf`` every token the grammar of
:mod:`gencraft.music.events` does not allow next:

* after ``TS``: ``Bar``;            after ``Bar``: a ``Pos`` inside the bar, or the next ``Bar``;
* after ``Pos``: a ``Pitch``;       after ``Pitch``: a ``Dur`` that ends by the end of the last bar
  (so every note is ended inside the piece);
* after ``Dur``: a higher ``Pitch`` (chord, lowest first), a later ``Pos``, or the next ``Bar``;
* exactly ``bars`` bars: after the last bar only its notes and then ``<|endoftext|>``;
* with ``max_new_tokens`` given, the piece is steered to close (bars and end) before the budget
  runs out, so a cut-off never leaves an incomplete piece.

The sampling itself (temperature, top-k/p, seed) is left to the decoding engine.
"""

from __future__ import annotations

import torch

from gencraft.music.events import bar_steps
from gencraft.music.tokenizer import MusicTokenizer


class MusicGrammar:
    """Constraint processor for ``bars`` complete bars of REMI events (see module docstring)."""

    def __init__(self, tokenizer: MusicTokenizer, bars: int, prompt_length: int = 0,
                 max_new_tokens: int | None = None) -> None:
        if bars < 1:
            raise ValueError("bars must be at least 1")
        self.bars = bars
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens
        self.kind: dict[int, tuple[str, str]] = {}
        self.eos = tokenizer.eos_id
        self.bar = tokenizer.vocab["Bar"]
        self.pos_ids: dict[int, int] = {}
        self.pitch_ids: dict[int, int] = {}
        self.dur_ids: dict[int, int] = {}
        self.ts: dict[int, str] = {}
        for tok, i in tokenizer.vocab.items():
            k, _, v = tok.partition("_")
            if k == "Pos":
                self.pos_ids[i] = int(v)
            elif k == "Pitch":
                self.pitch_ids[i] = int(v)
            elif k == "Dur":
                self.dur_ids[i] = int(v)
            elif k == "TS":
                self.ts[i] = v
        self.vocab_size = tokenizer.vocab_size
        self._pos_by_val = {v: i for i, v in self.pos_ids.items()}
        self._pitch_by_val = {v: i for i, v in self.pitch_ids.items()}
        self._dur_by_val = {v: i for i, v in self.dur_ids.items()}

    def _state(self, row: list[int]) -> dict:
        """Where the grammar stands after ``row``: last event kind, bar count, position, pitch."""
        st = {"last": "start", "bars": 0, "pos": -1, "pitch": -1, "spb": 16}
        for i in row:
            if i in self.ts:
                st.update(last="ts", spb=bar_steps(self.ts[i]), bars=0)
            elif i == self.bar:
                st.update(last="bar", bars=st["bars"] + 1, pos=-1, pitch=-1)
            elif i in self.pos_ids:
                st.update(last="pos", pos=self.pos_ids[i], pitch=-1)
            elif i in self.pitch_ids:
                st.update(last="pitch", pitch=self.pitch_ids[i])
            elif i in self.dur_ids:
                st["last"] = "dur"
            elif i == self.eos:
                st["last"] = "eos"
        return st

    def allowed(self, row: list[int]) -> list[int]:
        """Token ids the grammar allows after ``row`` (the prompt included)."""
        st = self._state(row)
        last, bars, spb = st["last"], st["bars"], st["spb"]
        if last == "eos":
            return [self.eos]
        # the budget: tokens still needed to finish = remaining bars + end (+ a Dur if a Pitch is open)
        generated = len(row) - self.prompt_length
        left = None if self.max_new_tokens is None else self.max_new_tokens - generated
        need = (self.bars - bars) + 1 + {"pitch": 1, "pos": 2}.get(last, 0)
        closing = left is not None and left <= need + 2
        end_or_bar = [self.bar] if bars < self.bars else [self.eos]
        if last in ("start", "ts"):
            return [self.bar]
        if last == "pitch":
            onset = (bars - 1) * spb + st["pos"]
            room = self.bars * spb - onset
            durs = [i for d, i in self._dur_by_val.items() if d <= room]
            return durs or [min(self.dur_ids, key=self.dur_ids.get)]
        if last == "pos":
            return list(self.pitch_ids)
        if closing:
            return end_or_bar
        if last == "bar":
            return [self._pos_by_val[k] for k in range(spb) if k in self._pos_by_val] + end_or_bar
        # last == "dur"
        out = [i for p, i in self._pitch_by_val.items() if p > st["pitch"]]
        out += [self._pos_by_val[k] for k in range(st["pos"] + 1, spb) if k in self._pos_by_val]
        return out + end_or_bar

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(logits, float("-inf"))
        for b, row in enumerate(ids.tolist()):
            allowed = torch.tensor(self.allowed(row), dtype=torch.long, device=logits.device)
            mask[b, allowed] = 0.0
        if logits.shape[-1] > self.vocab_size:  # a model vocabulary padded past the tokenizer's
            mask[:, self.vocab_size:] = float("-inf")
        return logits + mask
