"""Distances between sets of pieces: pitch-class histograms and note density.

* pitch-class distance: total variation (half the L1 distance, in [0, 1]) between the pooled
  pitch-class histograms (12 bins, every note counted once) of the two sets;
* note-density distance: 1-D Wasserstein distance between the per-piece distributions of notes
  per bar (in notes per bar).

The same functions measured between two halves of the real data give the floor a generator
should be compared with.
"""

from __future__ import annotations

import numpy as np

from gencraft.music.events import Piece


def pitch_class_histogram(pieces: list[Piece]) -> np.ndarray:
    """Normalized 12-bin pitch-class histogram pooled over ``pieces``."""
    h = np.zeros(12)
    for p in pieces:
        for n in p.notes:
            h[n.pitch % 12] += 1
    return h / h.sum() if h.sum() else h


def pitch_class_distance(a: list[Piece], b: list[Piece]) -> float:
    """Total-variation distance between the pooled pitch-class histograms of ``a`` and ``b``."""
    return float(0.5 * np.abs(pitch_class_histogram(a) - pitch_class_histogram(b)).sum())


def note_density(piece: Piece) -> float:
    """Notes per bar."""
    return len(piece.notes) / max(piece.bars, 1)


def wasserstein_1d(x: np.ndarray, y: np.ndarray) -> float:
    """W1 distance between two empirical 1-D distributions (area between their quantile functions)."""
    x, y = np.sort(np.asarray(x, float)), np.sort(np.asarray(y, float))
    if not len(x) or not len(y):
        return float("nan")
    q = np.linspace(0, 1, 1001)[1:-1]
    return float(np.abs(np.quantile(x, q) - np.quantile(y, q)).mean())


def note_density_distance(a: list[Piece], b: list[Piece]) -> float:
    """W1 distance between the notes-per-bar distributions of ``a`` and ``b``."""
    return wasserstein_1d(np.array([note_density(p) for p in a]), np.array([note_density(p) for p in b]))
