"""The one sampling core: the same seeded request gives the same tokens through the CLI, the Python
API and the server (greedy, top-k, top-p, a prompt past the context, n > 1, several prompts);
processors batched across rows equal them row by row; the sampler slot; beam search and the text
VAE decode through the core."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
from test_server import LiveServer, make_text_run  # noqa: E402

from gencraft.backends import load  # noqa: E402
from gencraft.generate import GenerationConfig, core, generate  # noqa: E402
from gencraft.generate import processors as P  # noqa: E402
from gencraft.server import ServerConfig  # noqa: E402
from gencraft.server.scheduler import Scheduler  # noqa: E402

BLOCK = 32  # the model's context: the long prompts below are past it, and outputs shift it
LONG = "the cat sat on the mat. a dog ran in the park! hello"  # 51 characters: 51 char tokens

# (prompt, options): the requests every interface must agree on
REQUESTS = [
    ("the cat", dict(max_tokens=20, temperature=0)),
    ("a dog", dict(max_tokens=24, temperature=0.9, top_k=5, seed=3)),
    ("hello", dict(max_tokens=24, temperature=1.0, top_p=0.8, seed=4)),
    (LONG, dict(max_tokens=40, temperature=1.1, seed=5)),  # prompt and output past the context
    ("wh", dict(max_tokens=16, temperature=1.2, seed=6, n=3)),
]


def engine_options(o: dict) -> dict:
    return {("max_new_tokens" if k == "max_tokens" else k): v for k, v in o.items()}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("core")
    make_text_run(h, "flat", block_size=BLOCK, peaked=False)  # many tokens in play: sampling really samples
    make_text_run(h, "peaked", block_size=BLOCK)
    return h


@pytest.fixture(scope="module")
def server(home: Path):
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0, store=False)) as s:
        yield s


def test_cli_api_and_server_give_the_same_tokens(home: Path, server: LiveServer, cli,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENCRAFT_HOME", str(home))
    tm = load(str(home / "runs" / "flat"))
    assert len(tm.tokenizer.encode(LONG)) > BLOCK
    for prompt, opts in REQUESTS:
        api = tm.generate(prompt, **engine_options(opts))
        api = api if isinstance(api, list) else [api]
        args = ["generate", "flat", "--prompt", prompt, "--json", "--no-copy-check", "-m", str(opts["max_tokens"]),
                "-t", str(opts["temperature"])]
        for name in ("top_k", "top_p", "seed", "n"):
            if name in opts:
                args += [f"--{name.replace('_', '-')}", str(opts[name])]
        r = cli(*args)
        assert r.code == 0, r.err
        via_cli = json.loads(r.out)["results"]
        resp = httpx.post(server.url + "/v1/completions", json={"model": "flat", "prompt": prompt, **opts}, timeout=60)
        assert resp.status_code == 200, resp.text
        via_server = sorted(resp.json()["choices"], key=lambda c: c["index"])
        assert [c["token_ids"] for c in via_cli] == [a.token_ids for a in api], (prompt, opts)
        assert [c["text"] for c in via_server] == [a.text for a in api], (prompt, opts)
        assert all(a.finish_reason == "length" for a in api)
    assert len({a.text for a in tm.generate("wh", **engine_options(REQUESTS[-1][1]))}) > 1  # n samples differ


def test_several_prompts_seed_each_choice_alike(home: Path, server: LiveServer) -> None:
    """A request of several prompts: choice ``p * n + i`` samples with the seed of the engine's row
    ``p * n + i`` (``sample_seed``), so the same batch request agrees too."""
    tm = load(str(home / "runs" / "flat"))
    prompts = ["the cat", "a dog ran"]
    opts = dict(max_tokens=12, temperature=1.0, seed=9, n=2)
    api = [r for per in tm.generate(prompts, **engine_options(opts)) for r in per]
    resp = httpx.post(server.url + "/v1/completions", json={"model": "flat", "prompt": prompts, **opts}, timeout=60)
    got = [c["text"] for c in sorted(resp.json()["choices"], key=lambda c: c["index"])]
    assert got == [a.text for a in api]
    assert core.sample_seed(9, 0) == 9 and core.sample_seed(7, 1) != core.sample_seed(8, 0)


def test_scheduler_shifts_each_row_like_the_engine(home: Path) -> None:
    """Requests past the context in one running batch (they join at different times, each shifts its
    own window while the others go on) get exactly the tokens the engine gives each alone."""
    tm = load(str(home / "runs" / "peaked"))
    jobs = [(LONG, dict(max_new_tokens=30, temperature=0)), ("the", dict(max_new_tokens=45, temperature=0.8, seed=1)),
            (LONG[:40], dict(max_new_tokens=36, temperature=1.0, top_k=4, seed=2)),
            ("a", dict(max_new_tokens=20, temperature=0))]
    want = [tm.generate(p, **o).token_ids for p, o in jobs]
    sched = Scheduler(tm, max_batch=8)

    async def one(i: int) -> list[int]:
        await asyncio.sleep(0.003 * i)
        p, o = jobs[i]
        return (await sched.submit(tm.tokenizer.encode(p), GenerationConfig(**o)).results())[0].token_ids

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(one(i) for i in range(len(jobs)))))

    try:
        got = asyncio.run(main())
    finally:
        sched.close()
    assert got == want
    assert sched.stats.max_active > 1
    assert all(len(g) == o["max_new_tokens"] for g, (_, o) in zip(got, jobs, strict=True))  # no early "length"


# ---------------------------------------------------------------- the core's parts


def test_batched_processors_equal_each_row_alone() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    ids = torch.zeros(4, 0, dtype=torch.long)
    cases = [[P.Temperature(t) for t in (0.7, 1.3, 0.9, 2.0)], [P.TopK(k) for k in (1, 5, 50, 7)],
             [P.TopP(p) for p in (0.1, 0.5, 0.9, 1e-6)], [P.MinP(p) for p in (0.05, 0.5, 0.0, 0.2)],
             [P.TypicalP(p) for p in (0.2, 0.9, 0.5, 0.99)],
             [P.LogitBias(b) for b in ({1: -100.0}, {2: 3.0, 7: -1.5}, {}, {49: 100.0})]]
    for procs in cases:
        together = type(procs[0]).batched(procs)(ids, logits.clone())
        for b, p in enumerate(procs):
            assert torch.equal(together[b], p(ids[b:b + 1], logits[b:b + 1].clone())[0]), (type(p).__name__, b)
    # a processor that reads ids (or keeps state) says nothing and runs row by row
    assert not hasattr(P.RepetitionPenalty, "batched") and not hasattr(P.NoRepeatNGram, "batched")


def test_choose_rows_is_choose_per_row() -> None:
    """Every row with its own rule (bias, temperature, top-k survivors, top-p, a processor object
    shared by two rows, a per-row penalty, greedy rows) comes out as that row chosen alone."""
    torch.manual_seed(1)
    V = 40
    logits = torch.randn(6, V)
    hist = [torch.randint(0, V, (1, n)) for n in (5, 7, 7, 3, 4, 6)]
    seen: list[int] = []

    def shared(ids: torch.Tensor, lg: torch.Tensor) -> torch.Tensor:  # a hook processor on two rows
        seen.append(ids.shape[0])
        lg[:, 3] += 2.0
        return lg

    cfgs = [GenerationConfig(temperature=0, logit_bias={4: 5.0}),
            GenerationConfig(temperature=0.8, top_k=5, logit_bias={1: 2.0}),
            GenerationConfig(temperature=1.2, top_p=0.7, processors=[shared], repetition_penalty=1.1),
            GenerationConfig(temperature=1.0, processors=[shared], repetition_penalty=1.3),
            GenerationConfig(temperature=0.5, top_k=3),
            GenerationConfig(temperature=0, repetition_penalty=2.0)]
    hist[3] = hist[2][:, :7].clone()  # equal histories: the shared processor runs once over both rows
    rules = [core.Rule.build(c, None, h.shape[1], V) for c, h in zip(cfgs, hist, strict=True)]
    assert rules[1].top_k == 5 and not any(isinstance(p, P.TopK) for p in rules[1].processors)
    together = core.choose_rows(logits, rules, [core.SeededDraw(10 + b) for b in range(6)], lambda b: hist[b])
    assert 2 in seen
    for b in range(6):
        alone = core.choose(logits[b:b + 1], hist[b], rules[b], [core.SeededDraw(10 + b)])
        assert int(alone[0]) == int(together[b]), b


class KeyedGumbel:
    """A toy keyed sampler (Gumbel-max / exponential sampling): ``argmax r ** (1 / p)`` with ``r``
    pseudo-random from a key and the last token -- what a distortion-free watermark plugs in."""

    calls: list[tuple[int, bool]] = []

    def __init__(self, key: int) -> None:
        self.key = key

    @staticmethod
    def sample(samplers, probs, ids, tokens):
        KeyedGumbel.calls.append((probs.shape[0], tokens is not None))
        out = []
        for b, s in enumerate(samplers):
            last = int(ids[b, -1])
            r = torch.rand(4096, generator=torch.Generator().manual_seed(s.key * 1_000_003 + last))
            cols = tokens[b] if tokens is not None else torch.arange(probs.shape[1])
            out.append(int((r[cols].log() / probs[b].clamp_min(1e-30)).argmax()))
        return torch.tensor(out)


def test_a_keyed_sampler_fills_the_slot_in_engine_and_scheduler(home: Path) -> None:
    tm = load(str(home / "runs" / "flat"))
    KeyedGumbel.calls.clear()
    opts = dict(max_new_tokens=14, temperature=1.0, sampler=lambda seed: KeyedGumbel(42))
    alone = [tm.generate(p, **opts).token_ids for p in ("the cat", "a dog")]
    topk = tm.generate("the cat", top_k=6, **opts).token_ids
    assert (1, True) in KeyedGumbel.calls and (1, False) in KeyedGumbel.calls  # survivors come with their ids
    assert tm.generate("the cat", **opts).token_ids == alone[0]  # keyed by the context: no randomness left
    assert alone[0] != tm.generate("the cat", max_new_tokens=14, temperature=1.0, seed=0).token_ids
    assert topk != alone[0]
    sched = Scheduler(tm, max_batch=4)

    async def main() -> list[list[int]]:
        tickets = [sched.submit(tm.tokenizer.encode(p), GenerationConfig(**opts)) for p in ("the cat", "a dog")]
        return [(await t.results())[0].token_ids for t in tickets]

    try:
        got = asyncio.run(main())
    finally:
        sched.close()
    assert got == alone
    assert any(n == 2 for n, _ in KeyedGumbel.calls)  # one call for both rows of the batch


def test_beam_search_shifts_the_window_like_the_engine(home: Path) -> None:
    """Beam search past the context: with length_penalty 0 a beam's score is the sum of its tokens'
    log-probabilities, each under the window the core had then (full forward passes here)."""
    tm = load(str(home / "runs" / "peaked"))
    m, ids = tm.model, tm.tokenizer.encode(LONG)
    res = generate(m, tm.tokenizer, [ids], GenerationConfig(max_new_tokens=24, num_beams=3, n=2, length_penalty=0.0,
                                                            stop_at_eos=False))[0]
    keep, x, ctx, total = core.shift_keep(BLOCK), list(ids), min(len(ids), BLOCK), 0.0
    with torch.no_grad():
        for t in res[0].token_ids:
            logits, _ = m(torch.tensor([x[-ctx:]]))
            total += float(logits[0, -1].log_softmax(-1)[t])
            x.append(t)
            ctx = keep if ctx >= BLOCK else ctx + 1
    assert len(res[0].token_ids) == 24 and res[0].score == pytest.approx(total, abs=1e-3)
    assert res[0].score >= res[1].score


def test_text_vae_decodes_through_the_core() -> None:
    """decode_latents is the engine's decoding: greedy equals the plain argmax loop over the step
    interface, sampling repeats with the same generator seed."""
    from gencraft.generate.latent import decode_latents
    from gencraft.models.text_vae import TextVAE, TextVAEConfig
    from gencraft.tokenize import train_tokenizer

    tok = train_tokenizer("char", ["the cat sat on the mat. a dog ran. "] * 3)
    torch.manual_seed(0)
    m = TextVAE(TextVAEConfig(vocab_size=tok.vocab_size, n_embd=16, n_hidden=32, n_latent=4, block_size=20,
                              eos_id=tok.eos_id)).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(8)  # peaked, so greedy paths are long and distinct
    z = torch.randn(3, 4)
    want = []
    with torch.inference_mode():
        for i in range(3):
            cache, t, out = m.new_cache(1, z=z[i:i + 1]), torch.tensor([[tok.eos_id]]), []
            for _ in range(20):
                logits, cache = m.step(t, cache)
                t = logits.argmax(-1, keepdim=True)
                if int(t) == tok.eos_id:
                    break
                out.append(int(t))
            want.append(b"".join(tok.token_bytes(t) for t in out).decode("utf-8", errors="replace"))
    assert decode_latents(m, tok, z) == want
    sampled = [decode_latents(m, tok, z, temperature=1.5, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]
    assert any(len(t) > 3 for t in want) and not math.isnan(float(z.sum()))
