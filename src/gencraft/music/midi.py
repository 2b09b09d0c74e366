"""Reading scores into :class:`~gencraft.music.events.Piece` and writing pieces as MIDI.

MIDI files are read with ``mido``; MusicXML, ABC and Humdrum kern through ``music21``, whose
package ships a corpus of public-domain scores (``music21:bach``) that needs no network.
music21 is always asked to parse the source (``forceSource=True``): it neither reads nor writes
its pickle cache, and it is never allowed to download.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

from gencraft.errors import DataError
from gencraft.io import write_bytes
from gencraft.music.events import (
    STEPS_PER_QUARTER,
    Note,
    Piece,
    bar_steps,
    make_piece,
    nearest_time_signature,
)

MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".xml", ".musicxml", ".mxl", ".abc", ".krn")
TICKS_PER_BEAT = 480


def _ticks_to_steps(ticks: int, tpb: int) -> int:
    return round(ticks * STEPS_PER_QUARTER / tpb)


def read_midi(path: str | os.PathLike[str]) -> Piece:
    """Read a MIDI file (all tracks, drums on channel 10 left out) onto the sixteenth grid."""
    import mido

    path = Path(path)
    try:
        mid = mido.MidiFile(str(path))
        messages = list(mido.merge_tracks(mid.tracks))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e}); "
                        "remove it or replace it with a valid .mid file") from None
    tpb = mid.ticks_per_beat or TICKS_PER_BEAT
    ts = None
    now = 0
    open_notes: dict[tuple[int, int], list[int]] = {}
    notes: list[Note] = []
    for msg in messages:
        now += msg.time
        if msg.type == "time_signature" and ts is None:
            ts = nearest_time_signature(msg.numerator, msg.denominator)
        if msg.type not in ("note_on", "note_off") or msg.channel == 9:
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            open_notes.setdefault(key, []).append(now)
        elif open_notes.get(key):
            start = open_notes[key].pop(0)
            s, e = _ticks_to_steps(start, tpb), _ticks_to_steps(now, tpb)
            notes.append(Note(s, msg.note, max(1, e - s)))
    if not notes:
        raise DataError(f"{path}: the MIDI file holds no notes; remove it from the sources")
    return make_piece(notes, ts or "4/4")


def _score_to_piece(score, name: str) -> Piece:
    ts_list = list(score.recurse().getElementsByClass("TimeSignature"))
    ts = nearest_time_signature(ts_list[0].numerator, ts_list[0].denominator) if ts_list else "4/4"
    score = score.stripTies()
    # a pickup bar: shift everything right so that beats fall where the metre puts them
    shift = Fraction(0)
    parts = list(getattr(score, "parts", [])) or [score]
    measures = list(parts[0].getElementsByClass("Measure"))
    if measures and measures[0].paddingLeft:
        shift = Fraction(measures[0].paddingLeft)
    notes: list[Note] = []
    for el in score.flatten().notes:
        ql = Fraction(el.quarterLength)
        if ql <= 0:  # grace note
            continue
        start = round((Fraction(el.offset) + shift) * STEPS_PER_QUARTER)
        dur = max(1, round(ql * STEPS_PER_QUARTER))
        for p in el.pitches:
            notes.append(Note(start, int(p.midi), dur))
    if not notes:
        raise DataError(f"{name}: the score holds no notes; remove it from the sources")
    return make_piece(notes, ts)


def read_score(path: str | os.PathLike[str]) -> list[Piece]:
    """Read a MusicXML/ABC/kern file with music21 (an ABC file may hold several tunes)."""
    from music21 import converter, stream

    path = Path(path)
    try:
        parsed = converter.parse(str(path), forceSource=True)
    except Exception as e:  # music21 raises many types for a malformed file
        raise DataError(f"{path}: cannot parse the score ({type(e).__name__}: {str(e)[:120]}); "
                        "remove it or fix the file") from None
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    return [_score_to_piece(s, str(path)) for s in scores]


def read_any(path: str | os.PathLike[str]) -> list[Piece]:
    """Pieces in one file, by suffix (MIDI or a score)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return [read_midi(path)]
    if suffix in SCORE_SUFFIXES:
        return read_score(path)
    raise DataError(f"{path}: unsupported music file type {suffix!r}; "
                    f"use one of {', '.join(MIDI_SUFFIXES + SCORE_SUFFIXES)}")


def to_midi(piece: Piece, tempo_bpm: float = 90.0, program: int = 0, velocity: int = 80):
    """A ``mido.MidiFile`` (type 0) playing ``piece``; the track ends at the end of its last bar."""
    import mido

    num, den = (int(x) for x in piece.time_signature.split("/"))
    tick = TICKS_PER_BEAT // STEPS_PER_QUARTER
    events: list[tuple[int, int, mido.Message]] = []
    # Two voices may hold the same pitch at once (overlapping unisons). On one channel MIDI could
    # not tell their note-offs apart, so such a note goes to the next free channel (10 = drums skipped).
    busy_until: dict[tuple[int, int], int] = {}
    channels = [c for c in range(16) if c != 9]
    used = {0}
    for n in piece.notes:
        ch = next((c for c in channels if busy_until.get((c, n.pitch), -1) <= n.start), 0)
        busy_until[(ch, n.pitch)] = n.start + n.duration
        used.add(ch)
        # note_off (order 0) before note_on (order 1) at the same tick, so repeated notes retrigger
        events.append((n.start * tick, 1, mido.Message("note_on", note=n.pitch, velocity=velocity, channel=ch)))
        events.append(((n.start + n.duration) * tick, 0,
                       mido.Message("note_off", note=n.pitch, velocity=0, channel=ch)))
    events.sort(key=lambda e: (e[0], e[1], e[2].channel, e[2].note))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
    for ch in sorted(used):
        track.append(mido.Message("program_change", program=program, channel=ch, time=0))
    now = 0
    for t, _, msg in events:
        track.append(msg.copy(time=t - now))
        now = t
    end = max(piece.length * tick, now)
    track.append(mido.MetaMessage("end_of_track", time=end - now))
    mid = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    mid.tracks.append(track)
    return mid


def midi_bytes(piece: Piece, tempo_bpm: float = 90.0) -> bytes:
    """``piece`` as the bytes of a standard MIDI file."""
    import io

    buf = io.BytesIO()
    to_midi(piece, tempo_bpm).save(file=buf)
    return buf.getvalue()


def write_midi(piece: Piece, path: str | os.PathLike[str], tempo_bpm: float = 90.0) -> None:
    """Atomically write ``piece`` as a standard MIDI file."""
    write_bytes(path, midi_bytes(piece, tempo_bpm))


def seconds(piece: Piece, tempo_bpm: float) -> float:
    """Duration of ``piece`` (whole bars) at ``tempo_bpm`` quarter notes a minute."""
    return piece.length / STEPS_PER_QUARTER * 60.0 / tempo_bpm


__all__ = ["read_midi", "read_score", "read_any", "to_midi", "midi_bytes", "write_midi", "seconds", "bar_steps"]
