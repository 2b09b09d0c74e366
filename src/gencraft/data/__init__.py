"""Text data: read sources, clean, deduplicate, split, tokenize, write a dataset directory.

``prepare(sources, out, ...)`` writes one (see :mod:`gencraft.data.prepare`);
``load_dataset(name_or_path)`` reads one back. Image and music datasets live in
:mod:`gencraft.data.images` and :mod:`gencraft.data.music`.
"""

from gencraft.data.dataset import TextDataset, load_dataset
from gencraft.data.prepare import combine, prepare

__all__ = ["TextDataset", "combine", "load_dataset", "prepare"]
