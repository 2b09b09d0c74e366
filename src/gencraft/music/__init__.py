"""Symbolic music: REMI event tokenization, MIDI/score reading and writing, a NumPy synthesizer,
the grammar constraint for generation and distances between sets of pieces."""

from gencraft.music.events import Note, Piece, decode, encode, to_text, transpose
from gencraft.music.midi import read_any, read_midi, read_score, write_midi
from gencraft.music.synth import render, write_wav

__all__ = ["Note", "Piece", "decode", "encode", "to_text", "transpose", "read_any", "read_midi",
           "read_score", "write_midi", "render", "write_wav"]
