"""The decoding engine: processors, strategies, stops, streaming, batching, seeds, errors."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from gencraft.backends import load
from gencraft.errors import NotFoundError, UsageError
from gencraft.generate import GenerationConfig, generate, stream
from gencraft.generate import processors as P
from gencraft.generate.core import draw
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.models.lstm import LSTMLM, LSTMConfig
from gencraft.runs import save_weights, write_info
from gencraft.tokenize import train_tokenizer

CORPUS = ["the cat sat on the mat. ", "a dog ran in the park! ", "héllo wörld, 你好世界. "] * 3
NEG = float("-inf")


@pytest.fixture(scope="module")
def char_tok():
    return train_tokenizer("char", CORPUS)


@pytest.fixture(scope="module")
def bpe_tok():
    return train_tokenizer("bpe", CORPUS * 4, vocab_size=300)


def make_gpt(tok, block_size=48, seed=0):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # a random model with a peaked distribution, so greedy paths are distinct
        m.wte.weight.mul_(20)
    return m.eval()


def make_lstm(tok, seed=0):
    torch.manual_seed(seed)
    return LSTMLM(LSTMConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=16, n_hidden=32, dropout=0.0)).eval()


def save_run(path, model, tok, kind):
    import dataclasses
    path.mkdir(parents=True)
    save_weights(model, path / "model.safetensors")
    tok.save(path / "tokenizer.json")
    write_info(path, {"kind": kind, "model": dataclasses.asdict(model.config),
                      "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id}})
    return path


def argmax_chain(model, ids, steps, block):
    """Greedy decoding the slow way: a full forward over the current window at every step.

    The window holds at most ``block`` tokens; when it is full it shifts, keeping the newest
    ``shift_keep(block)`` tokens (the engine's context shift).
    """
    from gencraft.generate.core import shift_keep

    out = []
    x = torch.tensor([ids])
    ctx = min(len(ids), block)
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(x[:, -ctx:])
            t = int(logits[0, -1].argmax())
            out.append(t)
            x = torch.cat([x, torch.tensor([[t]])], 1)
            ctx = shift_keep(block) if ctx >= block else ctx + 1
    return out


# ---- processors against hand-computed distributions ----

def probs_logits(*p):
    return torch.tensor([p]).log()


def kept(logits):
    return (logits[0] > NEG).nonzero().flatten().tolist()


def test_temperature_and_topk():
    ids = torch.zeros(1, 1, dtype=torch.long)
    assert P.Temperature(2)(ids, torch.tensor([[2.0, 1.0, 0.0]])).tolist() == [[1.0, 0.5, 0.0]]
    assert kept(P.TopK(2)(ids, torch.tensor([[1.0, 3.0, 2.0, 0.0]]))) == [1, 2]


def test_top_p_min_p_typical_p():
    ids = torch.zeros(1, 1, dtype=torch.long)
    assert kept(P.TopP(0.7)(ids, probs_logits(0.5, 0.3, 0.2))) == [0, 1]
    assert kept(P.TopP(0.45)(ids, probs_logits(0.5, 0.3, 0.2))) == [0]
    assert kept(P.TopP(1e-6)(ids, probs_logits(0.2, 0.5, 0.3))) == [1]  # always keeps one
    assert kept(P.MinP(0.5)(ids, probs_logits(0.5, 0.3, 0.2))) == [0, 1]
    # entropy 1.0297 nats; surprises 0.693, 1.204, 1.609 -> token 1 is the most typical
    assert kept(P.TypicalP(0.25)(ids, probs_logits(0.5, 0.3, 0.2))) == [1]
    assert kept(P.TypicalP(0.5)(ids, probs_logits(0.5, 0.3, 0.2))) == [0, 1]


def test_penalties():
    ids = torch.tensor([[-1, 0, 1]])  # -1 is padding: ignored
    out = P.RepetitionPenalty(2.0)(ids, torch.tensor([[2.0, -2.0, 1.0]]))
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    ids = torch.tensor([[2, 0, 0, 1]])  # prompt = [2]
    out = P.PresenceFrequencyPenalty(0.5, 0.25, prompt_len=1)(ids, torch.zeros(1, 3))
    assert out.tolist() == [[-1.0, -0.75, 0.0]]


def test_no_repeat_ngram_and_logit_bias():
    out = P.NoRepeatNGram(2)(torch.tensor([[1, 2, 1]]), torch.zeros(1, 4))
    assert kept(out) == [0, 1, 3]
    out = P.NoRepeatNGram(3)(torch.tensor([[1, 2, 3, 1, 2]]), torch.zeros(1, 4))
    assert kept(out) == [0, 1, 2]
    out = P.LogitBias({1: -100.0, 3: 2.5})(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 4))
    assert out.tolist() == [[0.0, -100.0, 0.0, 2.5]]


def test_bad_words_match_text_across_tokens(char_tok, bpe_tok):
    V = char_tok.vocab_size
    t_ids = [i for i in range(V) if char_tok.token_bytes(i) == b"t"]  # the char and its byte-fallback twin
    assert len(t_ids) == 2
    bw = P.BadWords(["cat"], char_tok)
    after_ca = bw(torch.tensor([char_tok.encode("the ca")]), torch.zeros(1, V))
    assert kept(after_ca) == [i for i in range(V) if i not in t_ids]
    after_c = bw(torch.tensor([char_tok.encode("the c")]), torch.zeros(1, V))
    assert len(kept(after_c)) == V
    # byte-level BPE: a token holding the whole word is always banned, its pieces only in context
    cat_tokens = [i for i in range(bpe_tok.vocab_size) if b"cat" in bpe_tok.token_bytes(i)]
    assert cat_tokens
    out = P.BadWords(["cat"], bpe_tok)(torch.tensor([bpe_tok.encode("a")]), torch.zeros(1, bpe_tok.vocab_size))
    assert all(out[0, i] == NEG for i in cat_tokens)


# ---- strategies ----

def test_greedy_is_the_argmax_chain_and_slides_the_window(char_tok):
    m = make_gpt(char_tok, block_size=16)
    ids = char_tok.encode("the cat sat on the mat")  # 22 tokens: longer than the window
    res = generate(m, char_tok, [ids], GenerationConfig(max_new_tokens=20, temperature=0))[0][0]
    assert res.token_ids == argmax_chain(m, ids, 20, 16)
    assert res.finish_reason == "length" and res.completion_tokens == 20


def test_lstm_greedy_is_the_argmax_chain(char_tok):
    m = make_lstm(char_tok)
    ids = char_tok.encode("a dog")
    res = generate(m, char_tok, [ids], GenerationConfig(max_new_tokens=12, temperature=0, stop_at_eos=False))
    assert res[0][0].token_ids == argmax_chain(m, ids, 12, 10_000)


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_batch_equals_single_for_greedy(char_tok, family):
    m = make_gpt(char_tok) if family == "gpt" else make_lstm(char_tok)
    prompts = ["the cat", "a", "héllo wörld, 你好"]
    cfg = GenerationConfig(max_new_tokens=15, temperature=0, stop_at_eos=False)
    batch = generate(m, char_tok, prompts, cfg)
    for p, got in zip(prompts, batch, strict=True):
        assert got[0].token_ids == generate(m, char_tok, [p], cfg)[0][0].token_ids


def test_padded_decode_skips_the_padding_every_row_has(char_tok):
    """Every row left-padded (3 and 5 positions): the one-position decode attends from position 3 on,
    and each row's logits equal the same row decoded alone without padding."""
    from gencraft.models.decode import session

    m = make_gpt(char_tok)
    rows = [char_tok.encode("the cat sat"), char_tok.encode("a dog")]
    P = max(len(r) for r in rows) + 3
    ids = torch.zeros(2, P, dtype=torch.long)
    n_pad = torch.tensor([P - len(r) for r in rows])
    for i, r in enumerate(rows):
        ids[i, P - len(r):] = torch.tensor(r)
    assert int(n_pad.min()) >= 3
    nxt = torch.tensor([[5], [7]])
    with session(m), torch.inference_mode():
        cache = m.new_cache(2)
        cache.left_pad(n_pad)
        m.step(ids, cache)
        batched = [m.step(nxt, cache)[0] for _ in range(3)][-1]
        for i, r in enumerate(rows):
            alone = m.new_cache(1)
            m.step(torch.tensor([r]), alone)
            want = [m.step(nxt[i:i + 1], alone)[0] for _ in range(3)][-1]
            assert torch.allclose(batched[i], want[0], atol=1e-5), i


class ToyTokenizer:
    """Four tokens: end-of-text, a, b, c."""

    kind, vocab_size, eos_id = "toy", 4, 0

    def encode(self, text):
        return ["<eos>abc".index(ch) - 4 if ch != "<" else 0 for ch in text]

    def decode(self, ids):
        return "".join("?abc"[i] for i in ids if i)

    def token_bytes(self, i):
        return b"" if i == 0 else "?abc"[i].encode()


class ToyCache:
    def __init__(self, batch):
        self.length, self.batch = 0, batch

    def select(self, rows):
        new = ToyCache(rows.numel())
        new.length = self.length
        return new


class ToyModel:
    """A bigram table: greedy takes 'a' (0.5) then at best 0.35 (0.175); 'b' then 'b' is 0.4*0.9 = 0.36."""

    device = torch.device("cpu")
    max_context = None
    table = torch.tensor([
        [0.25, 0.25, 0.25, 0.25],
        [0.05, 0.35, 0.30, 0.30],  # after a
        [0.02, 0.04, 0.90, 0.04],  # after b
        [0.10, 0.50, 0.40, 0.00],  # after c (the prompt)
    ]).log()

    def new_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return ToyCache(batch_size)

    def step(self, token_ids, cache):
        cache.length += token_ids.shape[1]
        return self.table[token_ids[:, -1]].clone(), cache


def test_beam_search_finds_the_better_sequence_greedy_misses():
    tok, m = ToyTokenizer(), ToyModel()
    greedy = generate(m, tok, [[3]], GenerationConfig(max_new_tokens=2, temperature=0))[0][0]
    assert greedy.text == "aa"
    beams = generate(m, tok, [[3]], GenerationConfig(max_new_tokens=2, num_beams=2, n=2, length_penalty=0.0))[0]
    assert beams[0].text == "bb"
    assert beams[0].score == pytest.approx(math.log(0.4 * 0.9), abs=1e-5)
    assert beams[1].score <= beams[0].score
    assert beams[1].text == "aa"
    assert beams[0].logprobs is None
    with_lp = generate(m, tok, [[3]], GenerationConfig(max_new_tokens=2, num_beams=2, n=2, length_penalty=0.0,
                                                       logprobs=True, top_logprobs=2))[0]
    for beam in with_lp:  # each token's log-probability under the model; they sum to the beam's score
        assert [lp.token_id for lp in beam.logprobs] == beam.token_ids
        assert sum(lp.logprob for lp in beam.logprobs) == pytest.approx(beam.score, abs=1e-5)
    first, second = with_lp[0].logprobs
    assert first.logprob == pytest.approx(math.log(0.4)) and second.logprob == pytest.approx(math.log(0.9))
    assert len(second.top) == 2 and second.top[0][1] == 2  # after "b": b (0.90) first


def test_diverse_beam_groups_differ():
    tok, m = ToyTokenizer(), ToyModel()
    # two groups of one beam: without the penalty both follow the same path, with it the second
    # group is pushed off the first group's token
    same = GenerationConfig(max_new_tokens=2, num_beams=2, num_beam_groups=2, n=2, length_penalty=0.0)
    assert [r.text for r in generate(m, tok, [[3]], same)[0]] == ["aa", "aa"]
    same.diversity_penalty = 5.0
    assert sorted(r.text for r in generate(m, tok, [[3]], same)[0]) == ["aa", "bb"]


def test_stop_strings_across_token_boundaries(char_tok, bpe_tok):
    for tok in (char_tok, bpe_tok):
        m = make_gpt(tok)
        cfg = GenerationConfig(max_new_tokens=30, temperature=0, stop_at_eos=False)
        full = generate(m, tok, ["the"], cfg)[0][0].text
        stop = full[5:8]  # spans several char tokens, and starts wherever it starts in BPE tokens
        cfg.stop = [stop, "never-there"]
        res = generate(m, tok, ["the"], cfg)[0][0]
        assert res.finish_reason == "stop"
        assert res.text == full[:full.index(stop)] and stop not in res.text
        streamed = "".join(stream(m, tok, "the", cfg))
        assert streamed == res.text


def test_stream_equals_generate_for_the_same_seed(char_tok):
    m = make_gpt(char_tok)
    for seed in range(4):  # byte-fallback tokens: deltas must not split characters
        cfg = GenerationConfig(max_new_tokens=40, temperature=1.5, top_k=50, seed=seed, stop=["e."])
        deltas = list(stream(m, char_tok, "héllo", cfg))
        res = generate(m, char_tok, ["héllo"], cfg)[0][0]
        assert "".join(deltas) == res.text
        assert all("\ufffd" not in d for d in deltas) or "\ufffd" in res.text


def test_draw_follows_the_distribution_and_never_picks_a_masked_token():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 2.0, 0.0, 2.0]])  # the second row is not normalized
    g = torch.Generator().manual_seed(0)
    n = 20000
    picks = torch.stack([draw(probs, torch.rand(2, generator=g, dtype=torch.float64)) for _ in range(n)])
    freq0 = torch.bincount(picks[:, 0], minlength=4) / n
    freq1 = torch.bincount(picks[:, 1], minlength=4) / n
    assert torch.allclose(freq0, torch.tensor([0.5, 0.0, 0.3, 0.2]), atol=0.015)
    assert torch.allclose(freq1, torch.tensor([0.0, 0.5, 0.0, 0.5]), atol=0.015)
    assert freq0[1] == 0 and freq1[0] == 0 and freq1[2] == 0
    ends = torch.tensor([0.0, 1.0 - 1e-12], dtype=torch.float64)  # the two ends of [0, 1)
    assert draw(probs[:1].expand(2, 4), ends).tolist() == [0, 3]


def test_topk_draw_over_survivors_equals_the_draw_over_the_masked_vocabulary(char_tok):
    """The engine samples top-k among the k survivors only; the same seed over the whole (masked)
    vocabulary -- another path, taken when a further filter is on -- must pick the same tokens."""
    m = make_gpt(char_tok)
    with torch.no_grad():
        m.wte.weight.div_(20)  # a flat distribution: many tokens in play
    for seed in range(3):
        fast = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=30, temperature=1.0, top_k=12,
                                                                seed=seed))[0][0]
        full = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=30, temperature=1.0, top_k=12,
                                                                min_p=1e-9, seed=seed))[0][0]
        assert fast.token_ids == full.token_ids
        assert len(set(fast.token_ids)) > 5


def test_seed_determinism_and_n_samples(char_tok):
    m = make_gpt(char_tok)
    cfg = GenerationConfig(max_new_tokens=25, temperature=1.2, top_p=0.95, seed=7, n=3)
    a = generate(m, char_tok, ["the", "a dog"], cfg)
    b = generate(m, char_tok, ["the", "a dog"], cfg)
    assert [[r.token_ids for r in x] for x in a] == [[r.token_ids for r in x] for x in b]
    assert len(a) == 2 and all(len(x) == 3 for x in a)
    assert len({tuple(r.token_ids) for r in a[0]}) > 1  # samples of one prompt differ
    cfg.seed = 8
    c = generate(m, char_tok, ["the", "a dog"], cfg)
    assert [r.token_ids for r in c[0]] != [r.token_ids for r in a[0]]


def test_eos_time_and_logprobs(char_tok):
    m = make_gpt(char_tok)
    eos = generate(m, char_tok, ["the"], GenerationConfig(logit_bias={char_tok.eos_id: 100.0}, temperature=0))
    assert eos[0][0].finish_reason == "eos" and eos[0][0].text == "" and eos[0][0].token_ids == []
    timed = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=500, max_time=1e-9, temperature=0))
    assert timed[0][0].finish_reason == "time" and timed[0][0].completion_tokens == 1
    res = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=5, temperature=0, top_logprobs=3))[0][0]
    assert len(res.logprobs) == 5
    for lp in res.logprobs:  # greedy: the chosen token is the top alternative
        assert lp.top[0][1] == lp.token_id and lp.top[0][2] == pytest.approx(lp.logprob)
        assert lp.logprob <= 0 and [v for _, _, v in lp.top] == sorted((v for _, _, v in lp.top), reverse=True)
    assert res.score == pytest.approx(sum(lp.logprob for lp in res.logprobs))


def test_hook_processor_and_bans_steer_generation(char_tok):
    m = make_gpt(char_tok)
    target = char_tok.encode("o")[0]

    def force_o(ids, logits):
        logits[:, :] = NEG
        logits[:, target] = 0.0
        return logits

    def favour_o(ids, logits):
        logits[:, target] += 50.0
        return logits

    res = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=5, processors=[force_o], seed=0))
    assert res[0][0].text == "ooooo"
    res = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=8, processors=[favour_o], temperature=0))
    assert res[0][0].text == "o" * 8
    # bans come before the hook in the chain and set -inf, which a boost cannot undo
    res = generate(m, char_tok, ["the"], GenerationConfig(max_new_tokens=8, processors=[favour_o], temperature=0,
                                                          bad_words=["ooo"]))
    assert "ooo" not in res[0][0].text and res[0][0].text.startswith("oo")


def test_run_dir_textmodel_and_astream(char_tok, tmp_path):
    m = make_gpt(char_tok)
    save_run(tmp_path / "runs" / "g", m, char_tok, "gpt")
    tm = load(str(tmp_path / "runs" / "g"))
    res = tm.generate("the", max_new_tokens=10, temperature=0)
    assert res.token_ids == argmax_chain(m, char_tok.encode("the"), 10, 48)
    many = tm.generate(["the", "a"], max_new_tokens=5, temperature=0.8, seed=1, n=2)
    assert len(many) == 2 and len(many[0]) == 2

    async def collect():
        return [d async for d in tm.astream("the", max_new_tokens=20, seed=3)]

    assert "".join(asyncio.run(collect())) == tm.generate("the", max_new_tokens=20, seed=3).text


@pytest.mark.parametrize(("opts", "param"), [
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature"),
    ({"num_beams": 0}, "num_beams"), ({"top_k": -1}, "top_k"), ({"num_beams": 4, "num_beam_groups": 3},
                                                                 "num_beam_groups"),
    ({"min_p": 1.0}, "min_p"), ({"presence_penalty": 3.0}, "presence_penalty"), ({"bogus": 1}, "bogus"),
])
def test_bad_options_name_the_parameter(opts, param):
    with pytest.raises(UsageError) as e:
        GenerationConfig.from_options(**opts)
    assert e.value.param == param and param in str(e.value) and "\n" not in str(e.value)


def test_unknown_run_is_not_found():
    with pytest.raises(NotFoundError):
        load("no-such-run")


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_rows_that_finish_early_leave_the_batch_without_changing_the_others(char_tok, family):
    m = make_gpt(char_tok) if family == "gpt" else make_lstm(char_tok)
    prompts = ["the cat", "a", "héllo wörld"]
    base = GenerationConfig(max_new_tokens=16, temperature=0, stop_at_eos=False)
    first = generate(m, char_tok, [prompts[1]], base)[0][0].text
    cfg = GenerationConfig(max_new_tokens=16, temperature=0, stop_at_eos=False, stop=[first[2:4]])
    batch = generate(m, char_tok, prompts, cfg)
    assert batch[1][0].finish_reason == "stop"  # this row left the batch early
    for p, got in zip(prompts, batch, strict=True):
        single = generate(m, char_tok, [p], cfg)[0][0]
        assert (got[0].token_ids, got[0].text, got[0].finish_reason) == (
            single.token_ids, single.text, single.finish_reason)
    zero = generate(m, char_tok, prompts, GenerationConfig(max_new_tokens=0))
    assert all(r[0].text == "" and r[0].finish_reason == "length" for r in zero)
