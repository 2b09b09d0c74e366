"""A piano roll of a :class:`~gencraft.music.events.Piece` as a PIL image: what a person looks at
instead of reading ``Bar Pos_0 Pitch_60 Dur_4`` (the studio's training samples, TensorBoard).

Time runs left to right (``px_step`` pixels a sixteenth, a darker line at every bar), pitch bottom
to top (``px_pitch`` pixels a semitone, C rows shaded) over the piece's own range plus a margin.
"""

from __future__ import annotations

from typing import Any

from gencraft.music.events import Piece

NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int) -> str:
    """``60 -> "C4"`` (scientific pitch notation, middle C = C4)."""
    return f"{NAMES[pitch % 12]}{pitch // 12 - 1}"


def describe(piece: Piece) -> str:
    """One line: ``2 bars of 4/4, 14 notes, C3-G5`` (or ``1 bar of 3/4, no notes``)."""
    bars = f"{piece.bars} bar{'s' if piece.bars != 1 else ''} of {piece.time_signature}"
    if not piece.notes:
        return f"{bars}, no notes"
    low, high = min(n.pitch for n in piece.notes), max(n.pitch for n in piece.notes)
    span = pitch_name(low) if low == high else f"{pitch_name(low)}-{pitch_name(high)}"
    return f"{bars}, {len(piece.notes)} note{'s' if len(piece.notes) != 1 else ''}, {span}"


def piano_roll(piece: Piece, px_step: int = 6, px_pitch: int = 4, margin: int = 2) -> Any:
    """The piece as an RGB image (at least one bar wide, at least an octave tall)."""
    from PIL import Image, ImageDraw

    pitches = [n.pitch for n in piece.notes] or [60]
    low, high = min(pitches) - margin, max(pitches) + margin
    if high - low < 12:
        low -= (12 - (high - low)) // 2
        high = low + 12
    steps = max(piece.length, piece.steps_per_bar)
    w, h = steps * px_step, (high - low + 1) * px_pitch
    im = Image.new("RGB", (w, h), (250, 250, 247))
    d = ImageDraw.Draw(im)
    for p in range(low, high + 1):
        if p % 12 == 0:  # the C rows, so a person can read the register
            y = (high - p) * px_pitch
            d.rectangle([0, y, w - 1, y + px_pitch - 1], fill=(232, 232, 226))
    for x in range(0, steps + 1, piece.steps_per_bar):
        d.line([x * px_step, 0, x * px_step, h], fill=(150, 150, 150))
    for n in piece.notes:
        x0, y0 = n.start * px_step, (high - n.pitch) * px_pitch
        d.rectangle([x0, y0, x0 + n.duration * px_step - 2, y0 + px_pitch - 1], fill=(40, 90, 170),
                    outline=(20, 45, 90))
    return im


__all__ = ["describe", "piano_roll", "pitch_name"]
