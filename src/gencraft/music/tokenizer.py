"""The music tokenizer: a Hugging Face ``tokenizers`` WordLevel model over event tokens.

``tokenizer.json`` is an ordinary ``tokenizers`` file (WordLevel model, whitespace split), so any
tool that reads HF tokenizers reads it; gencraft recognises it as music by its model type
(``WordLevel``) and the ``Bar`` token in its vocabulary (:func:`is_music_tokenizer`). It keeps
the project's tokenizer protocol (docs/architecture.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from gencraft.errors import DataError
from gencraft.io import write_text
from gencraft.music.events import EOS, vocabulary


class MusicTokenizer:
    """Event tokens <-> ids. ``decode`` joins events with single spaces."""

    kind = "music"

    def __init__(self, hf: HFTokenizer) -> None:
        self.hf = hf
        self.vocab = hf.get_vocab()
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.eos_id = self.vocab[EOS]

    @classmethod
    def build(cls) -> MusicTokenizer:
        """The tokenizer over the fixed event vocabulary (:func:`gencraft.music.events.vocabulary`)."""
        vocab = {tok: i for i, tok in enumerate(vocabulary())}
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=EOS))
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
        hf.add_special_tokens([EOS])  # already id 0; marks it special so decoders can skip it
        return cls(hf)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MusicTokenizer:
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise DataError(f"{path}: not a readable tokenizer file ({e})") from None
        if EOS not in hf.get_vocab():
            raise DataError(f"{path}: not a music tokenizer (no {EOS} token)")
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        unknown = [t for t in text.split() if t not in self.vocab]
        if unknown:
            raise DataError(f"unknown music event {unknown[0]!r}; events look like 'Bar', 'Pos_0', "
                            "'Pitch_60', 'Dur_4'", param="prompt")
        return self.hf.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.id_to_token[int(i)] for i in ids if int(i) in self.id_to_token)

    def token(self, i: int) -> str:
        return self.id_to_token[int(i)]

    def token_bytes(self, i: int) -> bytes:
        """The bytes a token adds to the decoded text: a separating space, then the event."""
        return (" " + self.id_to_token[int(i)]).encode("utf-8")

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text(path, self.hf.to_str(pretty=True))


def is_music_tokenizer(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a music tokenizer file (WordLevel model holding a ``Bar`` token)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    model = data.get("model") or {}
    return model.get("type") == "WordLevel" and "Bar" in (model.get("vocab") or {})
