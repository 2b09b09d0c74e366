"""Exporting gencraft runs to other ecosystems (``gencraft export RUN --format hf --out DIR``)."""

from gencraft.export.hf import export_hf

__all__ = ["export_hf"]
