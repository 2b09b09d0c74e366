"""REMI-style event tokenization of symbolic music.

A piece becomes one line of space-separated event tokens::

    TS_4/4 Bar Pos_0 Pitch_53 Dur_4 Pitch_65 Dur_4 Pos_4 Pitch_60 Dur_2 ... Bar ...

* ``TS_n/d``   the time signature, once, first (it fixes how many positions a bar has);
* ``Bar``      the start of each bar (an empty bar is just ``Bar``);
* ``Pos_k``    an onset position inside the bar, in sixteenth notes (``STEPS_PER_QUARTER`` a beat),
               strictly increasing inside a bar;
* ``Pitch_p``  a MIDI pitch (0-127) sounding from that position; several in a row, lowest first,
               make a chord;
* ``Dur_d``    the length of the note just named, in sixteenths (1..``MAX_DURATION``).

Why REMI (Huang & Yang, 2020) rather than note-on/note-off: a duration is attached to every
note, so a generated note can never be left hanging (no unmatched note-off to repair), and the
``Bar``/``Pos`` tokens give the model the metre explicitly, which is what makes "complete bars"
a simple grammar rule for the constraint processor (:mod:`gencraft.music.constraints`).

Choices that lose information, on purpose:
* onsets and durations are quantized to a sixteenth-note grid (Bach chorales lie on it exactly);
* velocity is dropped (chorales have none; MIDI sources are rendered at one velocity);
* durations longer than ``MAX_DURATION`` sixteenths are clipped; grace notes (no duration) skipped;
* the same pitch struck twice at the same onset (unison doubling between voices) is one note,
  the longest;
* only the first time signature is kept; a pickup (anacrusis) is placed at its metric position
  in bar 1, so the first bar starts with a rest.

The vocabulary is fixed (it does not depend on the data), so every music dataset shares it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EOS = "<|endoftext|>"
STEPS_PER_QUARTER = 4  # the grid: sixteenth notes
MAX_DURATION = 64  # sixteenths: four bars of 4/4
TIME_SIGNATURES = ("4/4", "3/4", "2/4", "2/2", "3/2", "5/4", "6/4", "3/8", "6/8", "9/8", "12/8")
MAX_BAR_STEPS = 32


def bar_steps(time_signature: str) -> int:
    """Grid positions in one bar of ``time_signature`` ("3/4" -> 12)."""
    num, den = (int(x) for x in time_signature.split("/"))
    return num * STEPS_PER_QUARTER * 4 // den


def vocabulary() -> list[str]:
    """Every event token, ``<|endoftext|>`` first (id 0)."""
    return (
        [EOS]
        + [f"TS_{ts}" for ts in TIME_SIGNATURES]
        + ["Bar"]
        + [f"Pos_{k}" for k in range(MAX_BAR_STEPS)]
        + [f"Pitch_{p}" for p in range(128)]
        + [f"Dur_{d}" for d in range(1, MAX_DURATION + 1)]
    )


@dataclass(frozen=True, order=True)
class Note:
    """One note on the grid: onset and duration in sixteenths from the start of the piece."""

    start: int
    pitch: int
    duration: int


@dataclass
class Piece:
    """Notes plus the metre; ``bars`` is the piece's length in bars."""

    notes: list[Note] = field(default_factory=list)
    time_signature: str = "4/4"
    bars: int = 0

    @property
    def steps_per_bar(self) -> int:
        return bar_steps(self.time_signature)

    @property
    def length(self) -> int:
        """Length in sixteenths (whole bars)."""
        return self.bars * self.steps_per_bar


def nearest_time_signature(num: int, den: int) -> str:
    """A supported time signature for ``num/den`` (unsupported ones fall back to 4/4)."""
    ts = f"{num}/{den}"
    return ts if ts in TIME_SIGNATURES else "4/4"


def normalize_notes(notes: list[Note]) -> list[Note]:
    """Clip durations to 1..MAX_DURATION, drop pitches outside 0..127, merge unison doublings."""
    best: dict[tuple[int, int], int] = {}
    for n in notes:
        if not 0 <= n.pitch <= 127 or n.start < 0:
            continue
        d = min(max(n.duration, 1), MAX_DURATION)
        key = (n.start, n.pitch)
        best[key] = max(best.get(key, 0), d)
    return sorted(Note(s, p, d) for (s, p), d in best.items())


def make_piece(notes: list[Note], time_signature: str = "4/4") -> Piece:
    """A :class:`Piece` from raw grid notes: normalized, with enough bars to hold every note."""
    notes = normalize_notes(notes)
    spb = bar_steps(time_signature)
    end = max((n.start + n.duration for n in notes), default=0)
    return Piece(notes, time_signature, max(1, -(-end // spb)))


def transpose(piece: Piece, semitones: int) -> Piece | None:
    """The piece moved by ``semitones``; None when a note would leave the MIDI range."""
    if any(not 0 <= n.pitch + semitones <= 127 for n in piece.notes):
        return None
    notes = [Note(n.start, n.pitch + semitones, n.duration) for n in piece.notes]
    return Piece(notes, piece.time_signature, piece.bars)


def encode(piece: Piece) -> list[str]:
    """Event tokens of ``piece`` (without the end-of-text token)."""
    spb = piece.steps_per_bar
    out = [f"TS_{piece.time_signature}"]
    by_bar: dict[int, list[Note]] = {}
    for n in normalize_notes(piece.notes):
        by_bar.setdefault(n.start // spb, []).append(n)
    bars = max(piece.bars, max(by_bar, default=-1) + 1)
    for b in range(bars):
        out.append("Bar")
        pos = -1
        for n in by_bar.get(b, []):  # sorted by (start, pitch)
            k = n.start - b * spb
            if k != pos:
                out.append(f"Pos_{k}")
                pos = k
            out += [f"Pitch_{n.pitch}", f"Dur_{n.duration}"]
    return out


def to_text(piece: Piece) -> str:
    """The document string of ``piece`` (what documents.jsonl and the tokenizer see)."""
    return " ".join(encode(piece))


class EventError(ValueError):
    """An event sequence that breaks the grammar (raised by ``decode(..., strict=True)``)."""


def decode(tokens: list[str] | str, strict: bool = False) -> Piece:
    """Rebuild a :class:`Piece` from event tokens.

    With ``strict=False`` (the default) tokens that break the grammar are skipped, so any model
    output gives a playable piece; with ``strict=True`` the first such token raises
    :class:`EventError` (used to measure how often unconstrained output is well-formed).
    """
    if isinstance(tokens, str):
        tokens = tokens.split()
    ts = "4/4"
    bars = 0
    pos: int | None = None
    pitch: int | None = None
    notes: list[Note] = []
    seen_ts = False

    def bad(i: int, why: str) -> None:
        if strict:
            raise EventError(f"token {i} ({tokens[i]!r}): {why}")

    for i, tok in enumerate(tokens):
        if tok == EOS:
            break
        kind, _, val = tok.partition("_")
        if pitch is not None and kind != "Dur":
            bad(i, "a Pitch must be followed by its Dur")
            pitch = None
        if kind == "TS":
            if seen_ts or bars:
                bad(i, "the time signature comes once, first")
                continue
            if val not in TIME_SIGNATURES:
                bad(i, "unknown time signature")
                continue
            ts, seen_ts = val, True
        elif tok == "Bar":
            bars += 1
            pos = None
        elif kind == "Pos":
            k = int(val)
            if bars == 0 or k >= bar_steps(ts) or (pos is not None and k <= pos):
                bad(i, "a position must lie inside the bar, after the previous one")
                continue
            pos = k
        elif kind == "Pitch":
            if pos is None:
                bad(i, "a Pitch needs a Pos before it")
                continue
            pitch = int(val)
        elif kind == "Dur":
            if pitch is None or pos is None:
                bad(i, "a Dur must follow a Pitch")
                continue
            notes.append(Note((bars - 1) * bar_steps(ts) + pos, pitch, int(val)))
            pitch = None
        else:
            bad(i, "unknown event token")
    if pitch is not None and tokens:
        bad(len(tokens) - 1, "the last Pitch has no Dur")
    piece = Piece(normalize_notes(notes), ts, bars)
    end = max((n.start + n.duration for n in piece.notes), default=0)
    if end > piece.length:
        if strict:
            raise EventError(f"a note ends at sixteenth {end}, after the last bar ({piece.length})")
        piece.bars = -(-end // piece.steps_per_bar)
    return piece
