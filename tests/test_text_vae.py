"""The text VAE: step interface, KL schedules, posterior collapse detection, a memorized latent
space (interpolation endpoints decode back), the CLI, resume, and a Chinese corpus."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gencraft.errors import ConfigError, RunError
from gencraft.generate.latent import interpolate, vary
from gencraft.guard import TournamentWatermark, watermark_options
from gencraft.guard.tournament import detect
from gencraft.models.text_vae import TextVAE, TextVAEConfig, encode_texts
from gencraft.tokenize import load_tokenizer
from gencraft.train.text_vae import KLConfig, kl_weight, load_text_vae, pad_batch, sentences, train_text_vae

FAST = ["num_threads=1", "log_interval=50"]


def toy_dataset(tmp_path, lines: list[str], name: str, memorize: bool = False) -> str:
    """A line-per-document dataset; ``memorize`` makes the validation split a copy of the training one."""
    from gencraft.data import prepare

    f = tmp_path / f"{name}.txt"
    f.write_text("\n".join(lines + lines if memorize else lines) + "\n", encoding="utf-8")
    if memorize:
        return str(prepare([f], name, unit="line", dedupe=False, split="tail", val_fraction=0.5, license="CC0-1.0"))
    return str(prepare([f], name, unit="line", val_fraction=0.3, dedupe=False, license="CC0-1.0"))


def test_step_matches_teacher_forced_forward():
    torch.manual_seed(0)
    m = TextVAE(TextVAEConfig(vocab_size=20, n_embd=16, n_hidden=24, n_latent=4, n_layer=2, eos_id=0)).eval()
    x = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    z = torch.randn(2, 4)
    # teacher forcing: BOS, then the tokens
    inp = torch.cat([torch.full((2, 1), m.bos_id), x[:, :-1]], 1)
    full, _ = m._decode(inp, z, m.initial_state(z))
    cache = m.new_cache(2, z=z)
    logits, cache = m.step(torch.tensor([[0], [0]]), cache)  # a leading end-of-text token stands for BOS
    assert torch.allclose(logits, full[:, 0], atol=1e-5)
    logits, cache = m.step(x[:, :2], cache)
    assert torch.allclose(logits, full[:, 2], atol=1e-5) and cache.length == 3
    one = cache.select(torch.tensor([1]))
    logits1, _ = m.step(x[1:, 2:3], one)
    assert torch.allclose(logits1, full[1:, 3], atol=1e-5)
    # a prior cache draws z from the global RNG: seeded, it repeats
    torch.manual_seed(3)
    a = m.new_cache(2).z
    torch.manual_seed(3)
    assert torch.equal(a, m.new_cache(2).z)


def test_sentences_and_padding():
    s = sentences([3, 4, 0, 5, 0, 0, 6, 7, 8, 9], eos_id=0, max_len=3)
    assert [x.tolist() for x in s] == [[3, 4, 0], [5, 0], [6, 7, 0]]
    x, lengths = pad_batch(s, 0)
    assert x.tolist() == [[3, 4, 0], [5, 0, 0], [6, 7, 0]] and lengths.tolist() == [3, 2, 3]


def test_kl_schedules():
    assert kl_weight(0, KLConfig(kl_anneal="none"), 100) == 1.0
    lin = KLConfig(kl_anneal="linear", kl_anneal_iters=50)
    assert [kl_weight(s, lin, 100) for s in (0, 25, 50, 90)] == [0.0, 0.5, 1.0, 1.0]
    cyc = KLConfig(kl_anneal="cyclical", kl_cycles=2, kl_ratio=0.5)
    assert [kl_weight(s, cyc, 100) for s in (0, 10, 25, 40, 50, 60)] == [0.0, 0.4, 1.0, 1.0, 0.0, 0.4]


def test_posterior_collapse_is_detected(tmp_path):
    """With no annealing, no word dropout and no free bits the decoder ignores z: the reported KL is
    ~0 and no unit is active. With KL annealing (and word dropout) the latent stays in use."""
    rng = random.Random(0)
    words = ["red", "blue", "green", "cat", "dog", "fox", "runs", "sleeps", "jumps", "big", "small", "old"]
    lines = sorted({" ".join(rng.choice(words) for _ in range(3)) for _ in range(200)})[:64]
    ds = toy_dataset(tmp_path, lines, "toy")
    common = FAST + ["max_iters=400", "eval_interval=200"]
    off = train_text_vae(ds, out="off", overrides=common + ["kl_anneal=none", "word_dropout=0", "free_bits=0"],
                         progress=False)
    on = train_text_vae(ds, out="on", overrides=common + ["kl_anneal=linear", "word_dropout=0.5", "free_bits=0"],
                        progress=False)
    m_off = json.loads((off / "gencraft.json").read_text())["metrics"]
    m_on = json.loads((on / "gencraft.json").read_text())["metrics"]
    assert m_off["val_kl"] < 0.01 and m_off["val_active_units"] == 0
    assert m_on["val_kl"] > 0.03 and m_on["val_active_units"] >= 2
    assert m_on["val_nelbo"] == pytest.approx(m_on["val_recon"] + m_on["val_kl"], rel=1e-6)
    vals = [r for r in map(json.loads, (on / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]
    assert {"recon", "kl", "nelbo", "active_units"} <= set(vals[-1])


def test_memorized_interpolation_endpoints_and_cli(tmp_path, cli):
    lines = ["the red fox runs", "a blue cat sleeps", "old dogs jump high", "small birds sing",
             "green frogs swim", "big bears eat fish", "the moon is bright", "rain falls softly"]
    ds = toy_dataset(tmp_path, lines, "mem", memorize=True)
    run = train_text_vae(ds, out="mem", progress=False, seed=0,
                         overrides=FAST + ["max_iters=600", "eval_interval=300", "kl_anneal=linear",
                                           "word_dropout=0.5", "free_bits=0"])
    model, info, path = load_text_vae(run)
    tok = load_tokenizer(path)
    for a, b in [(lines[0], lines[1]), (lines[2], lines[5])]:
        path_ab = interpolate(model, tok, a, b, steps=6)
        assert path_ab[0] == a and path_ab[-1] == b
    mu, _ = encode_texts(model, tok, lines)
    assert torch.cdist(mu, mu).triu(1)[torch.ones(8, 8).triu(1).bool()].min() > 0.1  # distinct codes

    r = cli("vae", "interpolate", str(run), lines[0], lines[1], "--steps", "4")
    assert r.code == 0, r.err
    out = r.out.strip().splitlines()
    assert len(out) == 4 and out[0] == f"0.00\t{lines[0]}" and out[-1] == f"1.00\t{lines[1]}"
    r = cli("vae", "vary", str(run), lines[3], "--n", "3", "--radius", "0")
    assert r.code == 0 and r.out.strip().splitlines() == [lines[3]] * 3
    r = cli("vae", "vary", str(run), lines[3], "--n", "0")
    assert r.code == 2 and "--n" in r.err and len(r.err.strip().splitlines()) == 1

    # sampled codes draw through the watermark's sampler (the release step's): the texts carry its key
    wm, other = (TournamentWatermark(k * 32, tok.vocab_size) for k in (b"k", b"o"))
    texts = vary(model, tok, lines[3], n=24, radius=2.0, seed=0, temperature=1.0, options=watermark_options(wm))
    ids = [i for t in texts for i in tok.encode(t)]
    mine, theirs = detect(ids, wm.rule), detect(ids, other.rule)
    assert mine.p_value < 1e-3 < theirs.p_value


def test_resume_config_errors_and_wrong_kind(tmp_path, cli):
    lines = [f"line number {i} of the toy corpus" for i in range(30)]
    ds = toy_dataset(tmp_path, lines, "small")
    run = train_text_vae(ds, out="r", overrides=FAST + ["max_iters=20", "eval_interval=10"], progress=False)
    assert json.loads((run / "gencraft.json").read_text())["metrics"]["step"] == 20
    run = train_text_vae(ds, out="r", overrides=FAST + ["max_iters=30"], resume=True, progress=False)
    info = json.loads((run / "gencraft.json").read_text())
    assert info["kind"] == "text_vae" and info["metrics"]["step"] == 30
    with pytest.raises(ConfigError, match="kl_anneal"):
        train_text_vae(ds, out="bad", overrides=["kl_anneal=sometimes"], progress=False)
    (tmp_path / "notvae").mkdir()
    (tmp_path / "notvae" / "gencraft.json").write_text(json.dumps({"kind": "gpt"}))
    with pytest.raises(RunError, match="text_vae"):
        load_text_vae(tmp_path / "notvae")
    r = cli("vae", "vary", str(tmp_path / "notvae"), "hello")
    assert r.code == 2 and "text_vae" in r.err


def test_chinese_lines(tmp_path, shared_data):
    poems = json.loads((shared_data / "tang300.json").read_text(encoding="utf-8"))
    lines = [ln for p in poems[:40] for ln in p["paragraphs"]]
    ds = toy_dataset(tmp_path, lines, "tang")
    run = train_text_vae(ds, out="tang", overrides=FAST + ["max_iters=30", "eval_interval=30"], progress=False)
    m = json.loads((run / "gencraft.json").read_text())["metrics"]
    assert m["val_nelbo"] > 0 and m["step"] == 30
    model, _, path = load_text_vae(run)
    tok = load_tokenizer(path)
    out = interpolate(model, tok, lines[0], lines[1], steps=3)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)


def test_decoding_engine_samples_from_the_prior():
    """The engine drives a text VAE like any model: prompts of different lengths, seeded output."""
    from gencraft.generate import GenerationConfig, generate
    from gencraft.tokenize import train_tokenizer

    tok = train_tokenizer("char", ["abcdefgh ijk"])
    torch.manual_seed(0)
    m = TextVAE(TextVAEConfig(vocab_size=tok.vocab_size, n_embd=16, n_hidden=24, n_latent=4,
                              eos_id=tok.eos_id)).eval()
    cfg = GenerationConfig.from_options(max_new_tokens=12, temperature=1.0, seed=1, n=2)
    torch.manual_seed(5)  # the prior draw of z comes from torch's global generator
    a = generate(m, tok, ["", "abc", "a"], cfg)
    torch.manual_seed(5)
    b = generate(m, tok, ["", "abc", "a"], cfg)
    assert [[r.token_ids for r in p] for p in a] == [[r.token_ids for r in p] for p in b]
    assert all(len(r.token_ids) >= 1 for p in a for r in p)
    # the padded prefill gives the same next-token logits as each prompt alone
    z = torch.randn(1, 4)
    alone, _ = m.step(torch.tensor([tok.encode("abc")]), m.new_cache(1, z=z))
    cache = m.new_cache(2, z=z.expand(2, -1))
    cache.left_pad(torch.tensor([0, 2]))
    both, _ = m.step(torch.tensor([tok.encode("abc"), [0, 0] + tok.encode("a")]), cache)
    single, _ = m.step(torch.tensor([tok.encode("a")]), m.new_cache(1, z=z))
    assert torch.allclose(both[0], alone[0], atol=1e-5) and torch.allclose(both[1], single[0], atol=1e-5)


def test_kl_schedule_follows_the_time_budget():
    lin = KLConfig(kl_anneal="linear")
    assert kl_weight(10, lin, 100_000, time_fraction=0.5) == 0.5
    assert kl_weight(10, lin, 100_000, time_fraction=1.0) == 1.0
