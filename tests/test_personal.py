"""Personalization: fine-tuning from a base (gencraft runs and Hugging Face folders), LoRA adapters
(training, loading back, merging, export, a changed base), and the bad inputs of issue 15."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gencraft.data.prepare import prepare
from gencraft.errors import DataError, GencraftError, NotFoundError, RunError, UsageError
from gencraft.train.finetune import base_tokenizer
from gencraft.train.loop import train

BASE_WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hum songs of old "
              "kings and queens under silver moons").split()
MINE_WORDS = "my cat naps in the warm sun by the kitchen window and dreams of silver fish".split()
TINY = ["n_layer=1", "n_head=2", "n_embd=32", "block_size=32", "batch_size=8", "eval_iters=4",
        "log_interval=10", "num_threads=1"]


def write_corpus(path: Path, words: list[str], n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        s = int(rng.integers(len(words)))
        docs.append(" ".join(words[(s + j) % len(words)] for j in range(int(rng.integers(6, 16)))) + ".")
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base GPT trained on one corpus, and a 'personal' corpus prepared with the base's tokenizer."""
    root = tmp_path_factory.mktemp("personal")
    a = write_corpus(root / "base.txt", BASE_WORDS, 300, 0)
    b = write_corpus(root / "mine.txt", MINE_WORDS, 120, 1)
    ds_a = prepare(a, root / "ds-a", unit="paragraph", license="CC0-1.0")
    base = train(ds_a, out=root / "base", overrides=TINY + ["max_iters=100", "eval_interval=50"], progress=False)
    ds_b = prepare_from(b, root / "ds-b", str(base), unit="paragraph", license="CC-BY-4.0")
    return {"root": root, "base": base, "ds_b": ds_b, "mine": b}


def prepare_from(src: Path, out: Path, spec: str, **kw) -> Path:
    """A dataset tokenized with a base model's tokenizer (``data prepare --tokenizer-from``)."""
    return prepare(src, out, tokenizer_from=spec, base_tokenizer=base_tokenizer(spec), **kw)


def _info(run: Path) -> dict:
    return json.loads((run / "gencraft.json").read_text(encoding="utf-8"))


def test_full_finetune_and_lora_from_a_gpt_run(world, cli):
    from gencraft.train.evaluate import evaluate

    root, base, ds_b = world["root"], world["base"], world["ds_b"]
    base_loss = evaluate(base, ds_b)["loss"]
    ft = train(ds_b, base=str(base), out=root / "ft", overrides=["max_iters=40", "eval_interval=20", "num_threads=1"],
               progress=False)
    ad = train(ds_b, base=str(base), lora=True, out=root / "ad",
               overrides=["max_iters=40", "eval_interval=20", "lora.r=4", "learning_rate=1e-2", "num_threads=1"], progress=False)
    # the loss on the personal held-out text goes down from the base's
    assert evaluate(ft)["loss"] < base_loss - 0.1
    assert evaluate(ad)["loss"] < base_loss - 0.05
    info = _info(ad)
    assert info["base"]["sha256"] == _info(base)["model_digest"]
    assert info["base"]["licenses"] == ["CC0-1.0"] and info["adapter"]["r"] == 4
    assert not (ad / "model.safetensors").exists()
    assert (ad / "adapter.safetensors").stat().st_size < 0.2 * (base / "model.safetensors").stat().st_size
    card = (ft / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Fine-tuned from" in card and "CC0-1.0" in card and "CC-BY-4.0" in card
    # defaults suited to fine-tuning, recorded
    assert _info(ft)["train"]["learning_rate"] < _info(base)["train"]["learning_rate"]

    # the adapter loads back: its tensors exactly, merged logits = base + adapter within 1e-5
    from gencraft.models import lora as L
    from gencraft.train.lora import load_model

    unmerged = load_model(ad, info, merge=False).eval()
    saved = load_file(str(ad / "adapter.safetensors"))
    got = L.adapter_state_dict(unmerged)
    assert got.keys() == saved.keys() and all(torch.equal(got[k], saved[k]) for k in saved)
    merged = load_model(ad, info, merge=True).eval()
    x = torch.randint(0, info["model"]["vocab_size"], (2, 24))
    with torch.no_grad():
        a, b = unmerged(x)[0], merged(x)[0]
    assert (a - b).abs().max().item() < 1e-5
    # decoding one sequence (the C step reads weights in place) gives the unmerged model's tokens
    ids = [5, 6, 7]
    from gencraft.generate import GenerationConfig, generate
    from gencraft.tokenize import load_tokenizer

    tok = load_tokenizer(ad / "tokenizer.json")
    cfg = GenerationConfig(max_new_tokens=12, temperature=0)
    r_merged = generate(merged, tok, [ids], cfg)[0][0].token_ids
    r_unmerged = generate(unmerged, tok, [ids], cfg)[0][0].token_ids
    assert r_merged == r_unmerged

    # CLI: generate from the adapter run, export it merged and load that with transformers
    res = cli("generate", str(ad), "--prompt", "my cat", "-m", "8", "--seed", "1", "--no-stream")
    assert res.code == 0, res.err
    out = root / "ad-hf"
    assert cli("export", str(ad), "--out", str(out)).code == 2  # an adapter needs --merge
    res = cli("export", str(ad), "--merge", "--format", "hf", "--out", str(out))
    assert res.code == 0, res.err
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert (hf(x).logits - b).abs().max().item() < 1e-4


def test_adapter_with_a_changed_or_missing_base_is_an_error(world, cli, tmp_path):
    base, ds_b = world["base"], world["ds_b"]
    base2 = tmp_path / "base2"
    shutil.copytree(base, base2)
    ad = train(ds_b, base=str(base2), lora=True, out=tmp_path / "ad2",
               overrides=["max_iters=10", "eval_interval=10", "num_threads=1"], progress=False)
    # the adapter's checkpoint holds the adapter only; --resume reads the base again
    ck = load_file(str(ad / "checkpoints" / "last" / "model.safetensors"))
    assert ck and all(".lora_" in k for k in ck)
    assert set(ck) == set(load_file(str(ad / "adapter.safetensors")))
    train(ds_b, out=ad, resume=True, overrides=["max_iters=12"], progress=False)
    assert _info(ad)["metrics"]["step"] == 12
    w = load_file(str(base2 / "model.safetensors"))
    w["wte.weight"][0, 0] += 1.0
    save_file(w, str(base2 / "model.safetensors"))
    res = cli("generate", str(ad), "--prompt", "my", "-m", "4")
    assert res.code == 2 and "has changed since the adapter was trained" in res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    with pytest.raises(RunError, match="has changed since the adapter was trained"):
        train(ds_b, out=ad, resume=True, overrides=["max_iters=14"], progress=False)
    shutil.rmtree(base2)
    res = cli("generate", str(ad), "--prompt", "my", "-m", "4")
    assert res.code == 2 and "is missing" in res.err


def test_lstm_finetune_and_lora_merge(world, tmp_path):
    from gencraft.train.lora import load_model

    root = world["root"]
    ds_a = root / "ds-a"
    lstm = train(ds_a, model="lstm", out=tmp_path / "lstm",
                 overrides=["n_embd=16", "n_hidden=32", "block_size=32", "batch_size=8", "eval_iters=2",
                            "max_iters=30", "eval_interval=30", "num_threads=1"], progress=False)
    ds_b = prepare_from(world["mine"], tmp_path / "ds-lstm", str(lstm), unit="paragraph", license="CC0-1.0")
    ad = train(ds_b, base=str(lstm), lora=True, out=tmp_path / "lstm-ad",
               overrides=["max_iters=20", "eval_interval=10", "lora.r=2", "num_threads=1"], progress=False)
    info = _info(ad)
    assert info["kind"] == "lstm" and info["adapter"]["modules"] == ["lstm"]
    x = torch.randint(0, info["model"]["vocab_size"], (2, 16))
    with torch.no_grad():
        a = load_model(ad, info, merge=False).eval()(x)[0]
        b = load_model(ad, info, merge=True).eval()(x)[0]
    assert (a - b).abs().max().item() < 1e-5
    with pytest.raises(GencraftError, match="no 'attn' layers"):
        train(ds_b, base=str(lstm), lora=True, out=tmp_path / "x", overrides=["lora.targets=attn"], progress=False)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hf_base(request, world, tmp_path_factory):
    """A tiny random Hugging Face model of each layout, with a BPE tokenizer (nothing downloaded)."""
    import transformers

    from gencraft.tokenize import train_tokenizer

    text = (world["root"] / "base.txt").read_text(encoding="utf-8")
    tok = train_tokenizer("bpe", text.split("\n\n"), vocab_size=300)
    common = dict(vocab_size=tok.vocab_size, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    if request.param == "gpt2":
        cfg = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, **common)
    else:
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                       **common)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=tok.eos_token, bos_token=tok.eos_token,
                                         clean_up_tokenization_spaces=False).save_pretrained(path)
    return path


def test_hf_base_full_and_lora(world, hf_base, tmp_path):
    from peft import PeftModel

    from gencraft.backends import load
    from gencraft.train.evaluate import evaluate
    from gencraft.train.lora import load_model

    spec = f"hf:{hf_base}"
    ds = prepare_from(world["mine"], tmp_path / "ds", spec, unit="paragraph", license="CC0-1.0")
    common = ["block_size=32", "batch_size=8", "eval_iters=2", "eval_interval=15", "num_threads=1"]
    ft = train(ds, base=spec, out=tmp_path / "ft", overrides=common + ["max_iters=15", "learning_rate=3e-3"],
               progress=False)
    ad = train(ds, base=spec, lora=True, out=tmp_path / "ad", overrides=common + ["max_iters=15", "lora.r=4"],
               progress=False)
    info = _info(ad)
    assert info["kind"] == "hf" and info["adapter"]["format"] == "peft"
    first = [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines()]
    val = [m["loss"] for m in first if m["split"] == "val"]
    assert evaluate(ft)["loss"] < np.log(300) - 0.2 and val  # learned something from a random base
    # peft loads the adapter folder onto the base as it is
    import transformers

    pm = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(hf_base), str(ad))
    x = torch.randint(0, 200, (1, 12))
    with torch.no_grad():
        ref = pm.eval()(x).logits
        ours = load_model(ad, info, merge=True).eval()(x)[0]
    assert (ref - ours).abs().max().item() < 1e-5
    tm = load(str(ad))
    assert tm.generate("my cat", max_new_tokens=5, temperature=0).completion_tokens >= 1
    assert load(str(ft)).info["base"]["spec"] == spec


def test_bad_inputs_are_one_line_errors(world, cli, tmp_path):
    base, ds_b = world["base"], world["ds_b"]

    def refused(*args: str, match: str) -> None:
        res = cli("train", *args)
        assert res.code == 2, res.err
        assert match in res.err and "Traceback" not in res.err, res.err
        assert not (tmp_path / "out").exists()  # nothing half-written

    out = ["--out", str(tmp_path / "out")]
    own = prepare(world["mine"], tmp_path / "own", unit="paragraph", license="CC0-1.0")
    refused(str(own), "--from", str(base), *out, match="tokenized with its own tokenizer")
    refused(str(ds_b), "--from", str(tmp_path / "nope"), *out, match="not found")
    image = tmp_path / "img"
    image.mkdir()
    (image / "gencraft.json").write_text(json.dumps({"kind": "dcgan"}))
    refused(str(ds_b), "--from", str(image), *out, match="a dcgan run")
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    refused(str(ds_b), "--from", str(broken), *out, match="corrupted")
    refused(str(ds_b), "--from", str(base), "--lora", "--set", "lora.r=0", *out, match="at least 1")
    refused(str(ds_b), "--from", str(base), "--lora", "--set", "lora.r=999", *out, match="at most 32")
    refused(str(ds_b), "--from", str(base), "--lora", "--set", "lora.targets=lstm", *out, match="no 'lstm'")
    refused(str(ds_b), "--lora", *out, match="--from")
    refused(str(ds_b), "--from", str(base), "--model", "lstm", *out, match="is a gpt model")
    refused(str(ds_b), "--from", str(base), "--set", "n_layer=3", *out, match="shape comes from the base")
    with pytest.raises(UsageError):
        prepare(world["mine"], tmp_path / "x", tokenizer="bpe", tokenizer_from=str(base))
    with pytest.raises(NotFoundError):
        base_tokenizer("hf:/nonexistent/model")
    res = cli("data", "prepare", str(world["mine"]), "--out", str(tmp_path / "x"), "--tokenizer-from", "hf:/nope")
    assert res.code == 2 and "hf:/nope" in res.err and not (tmp_path / "x").exists()
    assert issubclass(DataError, GencraftError) and issubclass(RunError, GencraftError)


# ---------------------------------------------------------------- learning from ratings (DPO)

def test_dpo_loss_against_hand_computed_values():
    from gencraft.train.dpo import dpo_loss, sequence_logprobs

    # margin = (-1.0 - -1.5) - (-2.0 - -1.5) = 1.0; loss = -log sigmoid(0.5 * 1.0) = log(1 + e^-0.5)
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.5)
    assert loss.item() == pytest.approx(0.4740769841801067, abs=1e-7)
    # two tokens scored, one masked: log softmax([0, ln 3]) picks ln(3/4), then ln(1/2)
    logits = torch.tensor([[[0.0, float(np.log(3))], [0.0, 0.0], [5.0, 1.0]]])
    lp = sequence_logprobs(logits, torch.tensor([[1, 0, -1]]))
    assert lp.item() == pytest.approx(np.log(0.75) + np.log(0.5), abs=1e-6)


def _rate_variants(base: Path, n_prompts: int = 6, per_prompt: int = 6) -> None:
    """A scripted rater: outputs that name the cat are liked, the others disliked (through the library API)."""
    from gencraft.backends import load
    from gencraft.library import Library

    tm = load(base)
    lib = Library.open()
    try:
        for p in range(n_prompts):
            prompt = ["my ", "the ", "in ", "warm ", "by ", "and "][p % 6]
            for i, r in enumerate(tm.generate(prompt, n=per_prompt, max_new_tokens=16, seed=p, temperature=1.0)):
                text = "cat " + r.text if i % 2 else r.text
                item = lib.add(kind="ads", model=str(base), prompt=prompt, text=text)
                lib.rate(item, 1 if "cat" in text else -1)
    finally:
        lib.close()


def test_tune_from_ratings_trains_a_preference_adapter(world, cli, tmp_path):
    from gencraft.backends import load

    base = world["base"]
    res = cli("tune", str(base), "--from-ratings", "--out", str(tmp_path / "p"))
    assert res.code == 2 and "no rated outputs" in res.err
    _rate_variants(base)
    res = cli("tune", str(base), "--from-ratings", "--kind", "ads", "--out", str(tmp_path / "p"), "-q",
              "--set", "max_iters=30", "--set", "eval_interval=15", "--set", "num_threads=1",
              "--set", "dpo.beta=0.5", "--set", "dpo.budget=0.001")
    assert res.code == 0, res.err
    info = _info(tmp_path / "p")
    assert info["adapter"]["objective"] == "dpo" and info["adapter"]["beta"] == 0.5
    # the corpus-loss budget: over it as trained, the adapter was scaled down to within it, and the
    # adapter as written gives the recorded loss on the base's corpus
    from gencraft.train.budget import corpus_sample
    from gencraft.train.data import load_dataset
    from gencraft.train.evaluate import split_loss
    from gencraft.train.lora import load_model

    b = info["adapter"]["budget"]
    assert b["tuned"] > b["reference"] * 1.001 and 0 < b["scale"] < 1
    assert b["fitted"] <= b["reference"] * 1.001 and b["corpus"] == _info(base)["data"]["dataset"]
    merged = load_model(tmp_path / "p", info).eval()
    data = corpus_sample(load_dataset(b["corpus"]).train, merged.config.block_size)
    assert abs(split_loss(merged, data, merged.config.block_size)[0] - b["fitted"]) < 1e-4
    train_loss = [m["loss"] for m in map(json.loads, (tmp_path / "p" / "metrics.jsonl").read_text().splitlines())
                  if m["split"] == "train"]
    assert train_loss[-1] < 0.6931  # DPO starts at log 2 (the adapter starts at zero)
    assert "preference adapter" in (tmp_path / "p" / "MODEL_CARD.md").read_text()
    assert load(tmp_path / "p").generate("my ", max_new_tokens=4, temperature=0).completion_tokens > 0
    res = cli("tune", str(base), "--from-ratings", "--kind", "write")
    assert res.code == 2 and "no rated outputs" in res.err
    res = cli("tune", str(base), "--from-ratings", "--since", "yesterday")
    assert res.code == 2 and "--since" in res.err


def test_tune_with_one_kind_of_rating_is_an_error(world, cli):
    from gencraft.library import Library

    lib = Library.open()
    try:
        for t in ("my cat naps", "my cat dreams"):
            lib.rate(lib.add(kind="ads", prompt="my", text=t), 1)
    finally:
        lib.close()
    res = cli("tune", str(world["base"]), "--from-ratings")
    assert res.code == 2 and "only holds thumbs up" in res.err and "Traceback" not in res.err


def test_two_adapters_in_one_batch_each_row_as_its_adapter_alone(world):
    """The per-row low-rank path (S-LoRA/punica's gathered products, in PyTorch): one batch, rows on
    adapter 1, adapter 2 and the base; each row's greedy tokens are those of its adapter merged alone."""
    import copy

    from gencraft.generate import GenerationConfig, generate
    from gencraft.models import lora as L
    from gencraft.runs import load_text_model
    from gencraft.tokenize import load_tokenizer
    from gencraft.train.lora import LoRAConfig, select

    base, _, path = load_text_model(world["base"])
    tok = load_tokenizer(path / "tokenizer.json")
    names = select(base, "gpt", LoRAConfig(r=4))
    adapters, singles = [], []
    for seed in (1, 2):
        m = copy.deepcopy(base)
        L.inject(m, names, r=4, alpha=8.0)
        torch.manual_seed(seed)
        for p in L.adapter_parameters(m).values():
            p.data.normal_(0.0, 1.0)  # strong enough to change the greedy path
        adapters.append(L.adapter_state_dict(m))
        singles.append(L.merge(m).eval())
    bank = copy.deepcopy(base)
    L.load_bank(bank, adapters, [2.0, 2.0])  # makes the adapted layers LoRALinear
    prompts = ["the quick ", "old kings and ", "seven wiz"]
    cfg = GenerationConfig(max_new_tokens=12, temperature=0, stop_at_eos=False)
    with L.set_rows(torch.tensor([1, 2, 0])):
        rows = generate(bank, tok, prompts, cfg)
    for prompt, row, alone in zip(prompts, rows, [*singles, base.eval()], strict=True):
        assert row[0].token_ids == generate(alone, tok, [prompt], cfg)[0][0].token_ids
    base_alone = [generate(base, tok, [p], cfg)[0][0].token_ids for p in prompts[:2]]
    assert [r[0].token_ids for r in rows[:2]] != base_alone  # the adapters did change the rows


def _strong_adapter(run: Path, seed: int) -> None:
    """Replace an adapter run's tensors by large random ones: greedy paths then differ from the base's and
    from each other's, so a row running through the wrong adapter shows."""
    f = run / "adapter.safetensors"
    g = torch.Generator().manual_seed(seed)
    save_file({k: 0.1 * torch.randn(v.shape, generator=g) for k, v in load_file(str(f)).items()}, str(f))


def test_server_batches_two_adapters_of_one_base(world, tmp_path):
    """Two adapter runs of one base (different ranks and layers) are served by one scheduler over one
    copy of the base: their requests share batches (one prefill, rows finishing and shifting their
    window at different steps), and each request's tokens are those of its adapter merged alone; so
    are a kit's (direct generation) and the HTTP API's, chosen by model name."""
    import asyncio

    from fastapi.testclient import TestClient

    from gencraft.backends import load
    from gencraft.server import ServerConfig, create_app
    from gencraft.server.catalog import Catalog

    home = tmp_path / "home"
    runs = {"mine-a": ["lora.r=4"], "mine-b": ["lora.r=2", "lora.targets=attn"]}
    for i, (name, extra) in enumerate(runs.items()):
        train(world["ds_b"], base=str(world["base"]), lora=True, out=home / "runs" / name, progress=False,
              overrides=["max_iters=2", "eval_interval=2", "eval_iters=1", "num_threads=1", *extra])
        _strong_adapter(home / "runs" / name, i)
    jobs = [("mine-a", "my cat ", 12), ("mine-b", "my cat ", 30), ("mine-a", "the warm sun", 40),
            ("mine-b", "dreams", 5)]  # 30 and 40 new tokens pass the 32-token context: windows shift
    alone = {n: load(home / "runs" / n) for n in runs}
    want = [alone[n].generate(p, max_new_tokens=k, temperature=0, stop_at_eos=False).token_ids for n, p, k in jobs]
    base = load(world["base"]).generate("my cat ", max_new_tokens=12, temperature=0, stop_at_eos=False).token_ids
    assert len({tuple(base), tuple(want[0]), tuple(want[1][:12])}) == 3  # each adapter changes the rows

    async def serve() -> tuple[list[list[int]], list[list[int]], int]:
        cat = Catalog(home=home, max_batch=8)
        try:
            loaded = {n: await cat.text(n) for n in runs}
            sched = loaded["mine-a"][1].sched
            assert loaded["mine-b"][1].sched is sched
            with sched._cv:  # all queued before the scheduler thread looks: one batch from the start
                tickets = [loaded[n][1].submit(loaded[n][0].tokenizer.encode(p), loaded[n][0].generation_config(
                    max_new_tokens=k, temperature=0, stop_at_eos=False)) for n, p, k in jobs]
            got = [(await t.results())[0].token_ids for t in tickets]
            direct = [loaded[n][0].generate(p, max_new_tokens=k, temperature=0, stop_at_eos=False).token_ids
                      for n, p, k in jobs]
            return got, direct, sched.stats.max_active
        finally:
            cat.close()

    got, direct, widest = asyncio.run(serve())
    assert widest == len(jobs) and got == want and direct == want
    with TestClient(create_app(ServerConfig(auth=False, home=home, rate_per_minute=0))) as c:
        r = c.post("/v1/completions", json={"model": "mine-b", "prompt": "dreams", "max_tokens": 5,
                                            "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == alone["mine-b"].tokenizer.decode(want[3])


def test_learn_from_my_ratings_job(tmp_path):
    """The studio's "learn from my ratings": a tune job in a worker process, refused at once without
    ratings, then trained; its result holds samples before and after, side by side."""
    import httpx
    from test_jobs import wait_for
    from test_server import LiveServer, make_text_run

    from gencraft.library import Library
    from gencraft.server import ServerConfig

    home = tmp_path / "home"
    make_text_run(home, "tiny")
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/gencraft/jobs", json={"kind": "tune", "params": {"run": "nope"}})
        assert r.status_code == 404
        r = c.post("/v1/gencraft/jobs", json={"kind": "tune", "params": {"run": "tiny"}})
        assert r.status_code == 400 and "no rated outputs" in r.json()["error"]["message"]
        lib = Library.open(f"sqlite:///{home / 'library.db'}")
        for i, prompt in enumerate(["the ", "a ", "my "] * 3):
            lib.rate(lib.add(kind="ads", prompt=prompt, text=f"cat naps {i}"), 1)
            lib.rate(lib.add(kind="ads", prompt=prompt, text=f"dog runs {i}"), -1)
        lib.close()
        job = c.post("/v1/gencraft/jobs", json={"kind": "tune", "params": {
            "run": "tiny", "set": {"max_iters": 12, "eval_interval": 6, "num_threads": 1}}}).json()
        j = wait_for(c, job["id"], lambda j: j["state"] not in ("queued", "running"), timeout=180)
        assert j["state"] == "succeeded", j
        assert j["result"]["run"] == "tiny+prefs" and (home / "runs" / "tiny+prefs" / "adapter.safetensors").is_file()
        samples = j["result"]["samples"]
        assert samples and all({"prompt", "before", "after"} <= set(x) for x in samples)
        # shown in the studio, so released like any output: stored in the server's library (kind "tune")
        lib = Library.open(f"sqlite:///{home / 'library.db'}")
        try:
            stored = {i.id: i for i in lib.search(kind="tune", limit=100)[0]}
        finally:
            lib.close()
        for x in samples:
            assert stored[x["before_id"]].text == x["before"] and stored[x["after_id"]].text == x["after"]


def test_studio_rate_then_learn_from_my_ratings_in_the_browser(tmp_path):
    """Web studio: rate outputs in the library tab, "Learn from my ratings" runs a tune job with progress,
    then the samples of the model before and after show side by side (headless Chromium)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    from test_server import LiveServer, make_text_run
    from test_studio_browser import CHROMIUM, shot

    from gencraft.library import Library
    from gencraft.server import ServerConfig

    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium)")
    home = tmp_path / "home"
    make_text_run(home, "tiny")
    lib = Library.open(f"sqlite:///{home / 'library.db'}")
    for i, prompt in enumerate(["the ", "a ", "my "] * 2):
        lib.add(kind="ads", model="tiny", prompt=prompt, text=f"cat naps {i}")
        lib.add(kind="ads", model="tiny", prompt=prompt, text=f"dog runs {i}")
    lib.close()
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(s.url + "/")
        page.click(".tab[data-tab=library]")
        page.wait_for_function("document.getElementById('lib-count').textContent === '12 items'")
        cards = page.locator(".lib-item")
        for i in range(cards.count()):
            card = cards.nth(i)
            card.locator("button.up" if "cat" in card.inner_text() else "button.down").click()
        page.wait_for_function("document.querySelectorAll('.lib-item button.on').length === 12")
        page.wait_for_function("document.querySelectorAll('#learn-run option').length > 0")
        page.select_option("#lib-kind", "ads")
        page.click("#learn-go")
        page.wait_for_function("document.getElementById('learn-status').textContent.length > 0")
        page.wait_for_selector("#learn-compare:not([hidden])", timeout=180_000)
        assert page.locator("#learn-compare tbody tr").count() == 3
        assert "tiny+prefs" in page.inner_text("#learn-status")
        shot(page, "learn-from-ratings")
        browser.close()
    assert not errors, errors
    assert (home / "runs" / "tiny+prefs" / "adapter.safetensors").is_file()
