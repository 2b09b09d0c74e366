"""Turning generated tokens into text: incremental UTF-8 decoding, stop strings, stream deltas.

Tokens add bytes (``tokenizer.token_bytes``), not characters: a byte-level BPE token or a
byte-fallback token may hold part of a character. :class:`TextTracker` joins the bytes, decodes
only complete characters, finds stop strings across token boundaries, and hands out deltas that
never contain a stop string nor text that might still turn into one.
"""

from __future__ import annotations

import codecs


class TextTracker:
    """The text of one generated sequence, built a token at a time."""

    def __init__(self, table: tuple[bytes, ...] | list[bytes], stop: list[str]) -> None:
        self.table = table
        self.stop = stop
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # complete characters decoded so far (a stop string cuts it)
        self.emitted = 0  # how many characters of text were handed out as deltas
        self.stopped = False

    def push(self, token_id: int) -> bool:
        """Add a token's bytes; True when a stop string appeared (``text`` then ends before it)."""
        piece = self._decoder.decode(self.table[token_id] if token_id < len(self.table) else b"")
        if not piece:
            return False
        start = len(self.text)
        self.text += piece
        if self.stop:
            longest = max(len(s) for s in self.stop)
            lo = max(0, start - longest + 1)
            hits = [i for s in self.stop if (i := self.text.find(s, lo)) >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.stopped = True
                return True
        return False

    def finish(self) -> str:
        """Flush bytes of an unfinished character (as U+FFFD) unless a stop string ended the text."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self.text

    def delta(self, final: bool = False) -> str:
        """The text not handed out yet, holding back a tail that could still begin a stop string."""
        end = len(self.text)
        if not final and self.stop and not self.stopped:
            for k in range(min(end - self.emitted, max(len(s) for s in self.stop) - 1), 0, -1):
                tail = self.text[end - k:]
                if any(s.startswith(tail) for s in self.stop):
                    end -= k
                    break
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
