"""Structured generation: every output of a random or skewed model parses and validates."""

from __future__ import annotations

import json
import re

import pytest
import torch

from gencraft.errors import UsageError
from gencraft.generate import constraints as C
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.tokenize import train_tokenizer

PROSE = (
    "The ship left the harbour at dawn. Mira watched the grey water and counted the gulls.\n"
    "She had 12 coins, a rope and a map. \"Where now?\" asked Tomas, and she laughed.\n"
) * 8

SHEET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]+$", "maxLength": 12},
        "role": {"enum": ["mage", "rogue", "knight"]},
        "level": {"type": "integer", "minimum": 1, "maximum": 20},
        "traits": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
        "alive": {"type": "boolean"},
        "motto": {"type": "string"},  # no maxLength: closed by gencraft
    },
    "required": ["name", "role", "level", "traits"],
}



@pytest.fixture(scope="module", params=["char", "bpe"])
def tok(request):
    if request.param == "char":
        return train_tokenizer("char", [PROSE])
    return train_tokenizer("bpe", [PROSE], vocab_size=400)


def tiny_gpt(vocab_size: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    return model.eval()


class Skewed:
    """A real GPT whose next-token scores are pushed hard towards one token (a stubborn model)."""

    def __init__(self, model: GPT, token: int, push: float = 50.0) -> None:
        self.model, self.token, self.push = model, token, push

    def __getattr__(self, name: str):  # new_cache, max_context, parameters... come from the GPT
        return getattr(self.model, name)

    def step(self, ids, cache):
        logits, cache = self.model.step(ids, cache)
        logits = logits.clone()
        logits[:, self.token] += self.push
        return logits, cache


def test_json_schema_always_validates_char_and_bpe(tok):
    model = tiny_gpt(tok.vocab_size)
    g = C.json_schema(SHEET)
    for seed in range(12):
        r = C.generate(model, "Character: ", g, tokenizer=tok, seed=seed)
        C.validate_json(json.loads(r.text), SHEET)
        assert 1 <= r.value["level"] <= 20 and r.value["role"] in ("mage", "rogue", "knight")
        assert re.fullmatch("[A-Z][a-z]+", r.value["name"])
        assert len(r.text.encode()) <= g.max_bytes
        assert r.logprob < 0


@pytest.mark.parametrize("favour", ["a", "eos", "{"])
def test_stubborn_model_still_terminates_with_valid_output(tok, favour):
    base = tiny_gpt(tok.vocab_size, seed=1)
    token = tok.eos_id if favour == "eos" else tok.encode(favour)[0]
    model = Skewed(base, token)
    g = C.json_schema(SHEET)
    r = C.generate(model, "x", g, tokenizer=tok, seed=0)
    C.validate_json(r.value, SHEET)
    assert len(r.token_ids) < g.max_tokens


def test_regex_and_bounded_repetition(tok):
    model = Skewed(tiny_gpt(tok.vocab_size), tok.encode("a")[0], push=8.0)
    g = C.regex(r"[a-z]+@[a-z]+\.com", max_chars=20)
    for seed in range(8):
        r = C.generate(model, "mail: ", g, tokenizer=tok, seed=seed)
        assert re.fullmatch(r"[a-z]+@[a-z]+\.com", r.text) and len(r.text) <= 20


def test_batch_of_samples_with_rows_finishing_early(tok):
    g = C.json_schema({"type": "object", "properties": {"w": {"type": "string", "maxLength": 6},
                                                        "n": {"type": "integer", "minimum": 0, "maximum": 99}},
                       "required": ["w", "n"]})
    outs = C.generate_many(tiny_gpt(tok.vocab_size, seed=3), "rec: ", g, n=6, tokenizer=tok, seed=5)
    assert len(outs) == 6 and len({o.text for o in outs}) > 1
    for o in outs:
        assert set(o.value) == {"w", "n"} and 0 <= o.value["n"] <= 99
    again = C.generate_many(tiny_gpt(tok.vocab_size, seed=3), "rec: ", g, n=6, tokenizer=tok, seed=5)
    assert [o.text for o in again] == [o.text for o in outs]  # the seed reproduces the batch


def test_choice(tok):
    g = C.choice(["north", "south", "east", "west"])
    model = tiny_gpt(tok.vocab_size)
    seen = {C.generate(model, "go ", g, tokenizer=tok, seed=s).text for s in range(10)}
    assert seen <= {"north", "south", "east", "west"} and seen


def test_text_field_required_and_banned_terms(tok):
    banned = ["guaranteed", "best in the world", "free"]
    g = C.text_field(max_chars=30, min_chars=5, required=["Acme"], banned=banned)
    # push the model towards a letter of a banned word; the mask still keeps it out
    model = Skewed(tiny_gpt(tok.vocab_size), tok.encode("e")[0], push=3.0)
    for seed in range(10):
        r = C.generate(model, "Headline: ", g, tokenizer=tok, seed=seed)
        assert 5 <= len(r.text) <= 30 and "Acme" in r.text
        low = r.text.lower()
        assert not any(b in low for b in banned)


def test_processor_masks_logits_in_a_plain_loop(tok):
    g = C.choice(["yes", "no"])
    proc = C.ConstraintProcessor(g, tok)
    prompt = tok.encode("ok? ")
    ids = torch.tensor([prompt])
    out = []
    for _ in range(g.max_tokens):
        masked = proc(ids, torch.zeros(1, tok.vocab_size))
        nxt = int(masked.argmax())
        assert torch.isfinite(masked[0, nxt])
        if nxt == tok.eos_id:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert tok.decode(out) in ("yes", "no") and proc.accepting()


def test_close_schema_bounds_open_values():
    closed = C.close_schema({"type": "object", "properties": {"a": {"type": "string"},
                                                              "b": {"type": "array", "items": {"type": "number"}}}})
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["maxLength"] == C.DEFAULT_MAX_STRING
    assert closed["properties"]["b"]["maxItems"] == C.DEFAULT_MAX_ITEMS
    assert "multipleOf" in closed["properties"]["b"]["items"]
    assert C.schema_max_bytes(closed) > 0


def test_user_errors_name_the_parameter(tok):
    with pytest.raises(UsageError, match="regex"):
        C.regex("[a-")
    with pytest.raises(UsageError, match="schema"):
        C.json_schema({"type": "object", "properties": {"a": {"type": "strin"}}})
    with pytest.raises(UsageError, match="max_new_tokens"):
        C.generate(tiny_gpt(tok.vocab_size), "x", C.json_schema(SHEET), tokenizer=tok, max_new_tokens=5)
    with pytest.raises(UsageError, match="choice"):
        C.choice([])
    with pytest.raises(UsageError, match="does not match"):
        C.regex("[0-9]+").parse("abc")


def test_text_field_random_walks_never_break_the_rules(tok):
    """Uniformly random tokens among the allowed ones (the worst model) on the own byte automaton."""
    import numpy as np

    g = C.text_field(max_chars=24, min_chars=4, required=["Acme Co", "tea"], banned=["free", "best ever", "a c"])
    rng = np.random.default_rng(0)
    for _ in range(25):
        m = C.TextFieldMatcher(g, tok)
        out = []
        for _ in range(g.max_tokens):
            t = int(rng.choice(np.nonzero(m.allowed())[0]))
            m.consume_token(t)
            if t == tok.eos_id:
                break
            out.append(t)
        text = b"".join(tok.token_bytes(t) for t in out).decode("utf-8")  # always valid UTF-8
        g.parse(text)  # length, required and banned terms re-checked from the text
        assert C.accepts(g, tok, out)
    with pytest.raises(UsageError, match="banned"):
        C.text_field(max_chars=30, required=["Freedom"], banned=["free"])
    with pytest.raises(UsageError, match="fit"):
        C.text_field(max_chars=5, required=["Acme Kettle"])


def test_beam_search_reorders_rows_and_stays_valid(tok):
    """Beam search copies and reorders rows; the processor follows each row by its history."""
    model = tiny_gpt(tok.vocab_size, seed=2)
    r = C.generate(model, "x", C.json_schema(SHEET), tokenizer=tok, num_beams=3)
    C.validate_json(r.value, SHEET)
    t = C.generate(model, "x", C.text_field(max_chars=30, required=["Acme"], banned=["free"]),
                   tokenizer=tok, num_beams=3)
    assert "Acme" in t.text and len(t.text) <= 30


WORDS = {"type": "object", "properties": {"w": {"type": "array", "items": {
    "type": "string", "pattern": "^[a-z]+$", "minLength": 3, "maxLength": 14}, "minItems": 3, "maxItems": 3}},
    "required": ["w"]}


def test_a_word_the_model_ends_closes_the_string():
    """A model that wants a space after every letter (as prose would end a word) ends each ``^[a-z]+$``
    string as soon as the schema lets it: the refused word endings' probability goes to the closing
    quote, instead of the letters running on to maxLength (characters: each token one letter)."""
    tok = train_tokenizer("char", [PROSE])
    space = tok.encode(" ")[-1]
    out = C.generate(Skewed(tiny_gpt(tok.vocab_size), space), tok.encode("words: "), C.json_schema(WORDS),
                     tokenizer=tok, seed=0, temperature=0.0)
    assert [len(w) for w in out.value["w"]] == [3, 3, 3]


def test_a_string_starts_with_the_word_the_model_spells_with_a_space():
    """Byte-level BPE spells a word in prose with its leading space (`` ship``), which the pattern
    refuses; right after the opening quote that token's probability goes to the bare ``ship``."""
    tok = train_tokenizer("bpe", ["ship\n ship ship\nship and the ship\n"] * 40, vocab_size=300)
    table = C.token_table(tok)
    spaced, bare = table.index(b" ship"), table.index(b"ship")
    g = C.json_schema({"type": "string", "pattern": "^[a-z]+$", "maxLength": 8})
    proc = C.ConstraintProcessor(g, tok)
    ids = torch.tensor([tok.encode("x: ")])
    logits = torch.zeros(1, tok.vocab_size)
    proc(ids, logits)  # remembers where the prompt ends
    ids = torch.cat([ids, torch.tensor([tok.encode('"')])], dim=1)  # the opening quote
    logits[0, spaced] = 30.0
    masked = proc(ids, logits)
    assert not torch.isfinite(masked[0, spaced]) and int(masked.argmax()) == bare
