"""Tokenizers (char and byte-level BPE) behind one small protocol, saved as ``tokenizer.json``.

``train_tokenizer(kind, texts, vocab_size=None)`` trains one; ``load_tokenizer(path)`` reads one
back (the kind is recognised from the file). See :mod:`gencraft.tokenize.core`.
"""

from gencraft.tokenize.core import (
    EOS,
    Tokenizer,
    TokenizerLike,
    detect_kind,
    load_tokenizer,
    tokenizer_from_str,
    train_tokenizer,
)

__all__ = ["EOS", "Tokenizer", "TokenizerLike", "detect_kind", "load_tokenizer", "tokenizer_from_str", "train_tokenizer"]
