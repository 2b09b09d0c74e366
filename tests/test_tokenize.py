"""Tokenizers: exact round trips for every Unicode string, token bytes, save/load, kinds."""

from __future__ import annotations

import json

import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gencraft.errors import DataError, NotFoundError, UsageError
from gencraft.tokenize import EOS, Tokenizer, detect_kind, load_tokenizer, train_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.\nThe dog sleeps.",
    "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
    "Café, naïve, résumé — déjà vu!  Tabs\tand   spaces.",
    "the the the then they there their theme",
] * 3

# Text that stresses a tokenizer: Chinese, emoji (incl. ZWJ sequences), whitespace runs,
# combining marks, control characters, and characters the corpus never had.
SPECIAL = st.sampled_from(list("床前明月光鬱龘𠀀😀👩‍👩‍👧🇫🇷e\u0301\u0308\u200b\u00a0 \t\n\r\x00\x7f<|>ÿĀ"))
TEXT = st.one_of(st.text(), st.text(alphabet=SPECIAL), st.lists(st.one_of(st.text(max_size=5), SPECIAL)).map("".join))


@pytest.fixture(scope="module")
def toks() -> dict[str, Tokenizer]:
    return {"char": train_tokenizer("char", CORPUS), "bpe": train_tokenizer("bpe", CORPUS, vocab_size=400)}


@pytest.mark.parametrize("kind", ["char", "bpe"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_round_trip_every_string(toks: dict[str, Tokenizer], kind: str, text: str) -> None:
    tok = toks[kind]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)
    # the bytes of the tokens are exactly the UTF-8 of the text (what streaming decoders rely on)
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_eos_and_literal_special_text(toks: dict[str, Tokenizer], kind: str) -> None:
    tok = toks[kind]
    assert tok.eos_id == 0 and tok.hf.id_to_token(0) == EOS
    text = f"end{EOS}start"
    ids = tok.encode(text)
    assert tok.eos_id not in ids  # a literal marker in user text is text, not the end of a document
    assert tok.decode(ids) == text
    assert tok.token_bytes(tok.eos_id) == b""
    assert tok.decode([*tok.encode("ab"), tok.eos_id]) == "ab"
    assert tok.encode_batch(["ab", "", "明月"]) == [tok.encode("ab"), [], tok.encode("明月")]


def test_char_vocabulary_layout(toks: dict[str, Tokenizer]) -> None:
    tok = toks["char"]
    vocab = tok.hf.get_vocab()
    assert vocab["<0x00>"] == 1 and vocab["<0xFF>"] == 256
    chars = sorted(set("".join(CORPUS)))
    assert tok.vocab_size == 257 + len(chars)
    assert [vocab[c] for c in chars] == list(range(257, 257 + len(chars)))
    # one id per seen character; an unseen one falls back to its UTF-8 bytes
    assert tok.encode("明月") == [vocab["明"], vocab["月"]]
    assert tok.encode("😀") == [1 + b for b in "😀".encode()]


def test_bpe_learns_merges_and_caps_vocab(toks: dict[str, Tokenizer]) -> None:
    tok = toks["bpe"]
    assert 257 < tok.vocab_size <= 400  # merges learned, the tiny corpus stops early
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")
    assert train_tokenizer("bpe", ["aaaa bbbb"] * 2, vocab_size=8000).vocab_size < 300


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_and_hf_reads_it(toks: dict[str, Tokenizer], kind: str, tmp_path) -> None:
    tok = toks[kind]
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert back.kind == kind and back.vocab_size == tok.vocab_size and back.eos_id == tok.eos_id
    text = "Hello 床前 😀\n"
    assert back.encode(text) == tok.encode(text)
    assert load_tokenizer(tmp_path).kind == kind  # a folder holding tokenizer.json
    assert detect_kind(json.loads(path.read_text(encoding="utf-8"))) == kind
    hf = tokenizers.Tokenizer.from_file(str(path))  # plain Hugging Face tooling reads the file
    assert hf.decode(hf.encode(text).ids) == text


def test_music_kind_dispatches_to_its_class(tmp_path) -> None:
    music = pytest.importorskip("gencraft.music.tokenizer")
    music.MusicTokenizer.build().save(tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert tok.kind == "music" and isinstance(tok, music.MusicTokenizer)


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(NotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json"):
        load_tokenizer(bad)
    with pytest.raises(UsageError, match="tokenizer"):
        train_tokenizer("word", CORPUS)
    with pytest.raises(UsageError, match="vocab-size"):
        train_tokenizer("bpe", CORPUS, vocab_size=100)
    with pytest.raises(UsageError, match="vocab-size"):
        train_tokenizer("char", CORPUS, vocab_size=1000)
    with pytest.raises(UsageError, match="lone surrogate"):
        train_tokenizer("char", CORPUS).encode("ok\udcff")
    with pytest.raises(UsageError, match="lone surrogate"):
        train_tokenizer("bpe", CORPUS).encode_batch(["ok", "\ud800"])
    with pytest.raises(UsageError, match="token id"):
        train_tokenizer("char", CORPUS).token_bytes(10_000)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tinyshakespeare_round_trip(shared_data, kind: str) -> None:
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    docs = text.split("\n\n")
    tok = train_tokenizer(kind, docs)
    ids = tok.encode_batch(docs)
    assert [tok.decode(i) for i in ids] == docs
    n_tokens = sum(map(len, ids))
    if kind == "char":
        assert tok.vocab_size == 257 + len(set(text)) and n_tokens == len(text) - 2 * (len(docs) - 1)
    else:
        assert tok.vocab_size == 8000 and n_tokens < len(text) / 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_char_fast_path_equals_hf(toks: dict[str, Tokenizer], text: str) -> None:
    tok = toks["char"]  # the numpy lookup must give exactly what the tokenizer.json model gives
    assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("kind", ["char", "bpe"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, max_size=6))
def test_encode_batch_equals_encode(toks: dict[str, Tokenizer], kind: str, texts: list[str]) -> None:
    tok = toks[kind]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
