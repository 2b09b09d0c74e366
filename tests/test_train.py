"""Training: configs and presets, schedule, the loop, checkpoints and exact resume, evaluation, CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gencraft.errors import ConfigError, TrainingDiverged, UsageError

# ---------------------------------------------------------------- fixtures

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hum songs of old "
         "kings and queens under silver moons").split()


def corpus(n_docs: int = 120, seed: int = 0) -> list[str]:
    """Small, learnable, deterministic text: sentences from a fixed vocabulary with local structure."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        start = int(rng.integers(len(WORDS)))
        k = int(rng.integers(8, 20))
        docs.append(" ".join(WORDS[(start + j) % len(WORDS)] for j in range(k)) + ".")
    return docs


def write_dataset(path: Path, docs: list[str], val_fraction: float = 0.2, license: str = "CC0-1.0") -> Path:
    """Write a dataset directory in the documented format (docs/architecture.md) with a char tokenizer."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    chars = sorted(set("".join(docs)))
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    n_val = max(1, int(len(docs) * val_fraction))
    splits = {"train": docs[:-n_val], "val": docs[-n_val:]}
    info = {}
    for name, ds in splits.items():
        ids = [i for d in ds for i in [vocab[c] for c in d] + [0]]
        np.asarray(ids, dtype=np.uint16).tofile(path / f"{name}.bin")
        info[name] = {"documents": len(ds), "tokens": len(ids), "chars": sum(len(d) for d in ds)}
    with open(path / "documents.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "source": 0, "split": "train" if i < len(docs) - n_val else "val",
                                "text": d}) + "\n")
    manifest = {
        "format": 1, "gencraft_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "name": path.name,
        "sources": [{"path": "fixture/corpus.txt", "sha256": "ab" * 32, "bytes": 1, "license": license,
                     "documents": len(docs), "encoding": "utf-8"}],
        "options": {}, "steps": [],
        "tokenizer": {"kind": "char", "vocab_size": len(vocab), "eos_id": 0},
        "splits": info, "dtype": "uint16", "digest": "d" * 64,
    }
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds", corpus())


FAST = ["n_layer=1", "n_head=2", "n_embd=32", "block_size=32", "batch_size=8", "eval_iters=4",
        "log_interval=5", "warmup_iters=5", "learning_rate=3e-3", "num_threads=1"]


def fast(*extra: str) -> list[str]:
    return FAST + list(extra)


# ---------------------------------------------------------------- configs, schedule, optimizer

def test_presets_combine_model_and_training_fields():
    from gencraft.train.config import TRAIN_PRESETS, resolve

    for kind in ("gpt", "lstm"):
        for preset in ("tiny", "small", "base"):
            m, t = resolve(kind, preset, vocab_size=77)
            assert m.vocab_size == 77 and t.batch_size == TRAIN_PRESETS[kind][preset]["batch_size"]
    m, t = resolve("gpt", "small", 65, ["n_layer=3", "learning_rate=5e-4", "compile=true", "max_iters=2e3"])
    assert (m.n_layer, t.learning_rate, t.compile, t.max_iters) == (3, 5e-4, True, 2000)


@pytest.mark.parametrize("pair, word", [("nope=1", "unknown key"), ("n_layer=two", "integer"),
                                        ("learning_rate=fast", "number"), ("dtype=float16", "expected one of"),
                                        ("batch_size=0", r"must be in \[1, "), ("n_embd=33", "multiple of n_head")])
def test_bad_overrides_are_config_errors(pair: str, word: str):
    from gencraft.train.config import resolve

    with pytest.raises(ConfigError, match=word):
        resolve("gpt", "tiny", 65, [pair])


def test_unknown_preset_and_model():
    from gencraft.train.config import resolve

    with pytest.raises(UsageError, match="--preset huge"):
        resolve("gpt", "huge", 65)
    with pytest.raises(UsageError, match="--model rnn"):
        resolve("rnn", "tiny", 65)


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    from gencraft.train.config import TrainConfig
    from gencraft.train.optim import lr_at

    tc = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, tc) for s in range(130)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # warmup rises
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111], strict=True))  # then decays
    assert lrs[60] == pytest.approx(0.5 * (1e-3 + 1e-4))  # cosine midpoint
    assert lrs[110] == lrs[129] == pytest.approx(1e-4)
    # a wall-clock budget pulls the decay forward
    assert lr_at(20, tc, time_fraction=0.5) == pytest.approx(0.5 * (1e-3 + 1e-4))
    assert lr_at(20, tc, time_fraction=1.0) == pytest.approx(1e-4)


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_no_weight_decay_on_norms_biases_embeddings(kind: str):
    from gencraft.models import build
    from gencraft.train.config import resolve
    from gencraft.train.optim import param_groups

    m, _ = resolve(kind, "tiny", 50, ["bias=true"] if kind == "gpt" else None)
    model = build(kind, m)
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in keep["params"]}
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert "wte.weight" in kept and not any("ln" in n or n.endswith("bias") for n in decayed)
    assert decayed and all(p.dim() >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(keep["params"]) == len(list(model.parameters()))


def test_bf16_training_attention_runs_in_float32_with_the_same_loss_and_gradients():
    """Under CPU bf16 autocast the GPT's training attention runs in float32 (ATen's bf16 CPU flash
    kernel is ~3.5x slower forward + backward at nanoGPT's shape); loss and gradients stay those of
    bf16 autocast, close to float32's."""
    from torch.overrides import TorchFunctionMode

    from gencraft.models.gpt import GPT, GPTConfig

    class Seen(TorchFunctionMode):
        dtypes: list[torch.dtype] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.scaled_dot_product_attention:
                self.dtypes.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32))
    x, y = torch.randint(0, 40, (4, 16)), torch.randint(0, 40, (4, 16))
    grads = {}
    for bf16 in (False, True):
        model.zero_grad(set_to_none=True)
        with Seen() as seen, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, loss = model(x, y)
        loss.backward()
        assert seen.dtypes[-2:] == [torch.float32, torch.float32]  # both layers' attention, both runs
        assert logits.dtype == (torch.bfloat16 if bf16 else torch.float32)
        grads[bf16] = (float(loss.detach()), torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert abs(grads[True][0] - grads[False][0]) < 0.02
    assert torch.nn.functional.cosine_similarity(grads[True][1], grads[False][1], dim=0) > 0.99


def test_optimizer_state_flattens_to_safetensors_and_back():
    from gencraft.train.checkpoint import flatten_optimizer, unflatten_optimizer

    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2)
    lin(torch.randn(2, 4)).sum().backward()
    opt.step()
    tensors, structure = flatten_optimizer(opt)
    json.dumps(structure)  # plain JSON
    sd = unflatten_optimizer(tensors, json.loads(json.dumps(structure)))
    ref = opt.state_dict()
    for pid in ref["state"]:
        for k, v in ref["state"][pid].items():
            assert torch.equal(sd["state"][pid][k], v)


# ---------------------------------------------------------------- the loop and the run directory

def test_train_writes_the_run_directory_and_evaluates(dataset: Path, cli):
    from gencraft.runs import load_text_model, sha256_file
    from gencraft.train.evaluate import evaluate
    from gencraft.train.loop import train

    run = train(dataset, model="gpt", preset="tiny", out="r1", progress=False,
                overrides=fast("max_iters=40", "eval_interval=20"))
    assert run == Path(os.environ["GENCRAFT_HOME"]) / "runs" / "r1"
    for name in ("gencraft.json", "model.safetensors", "tokenizer.json", "data_manifest.json", "metrics.jsonl",
                 "MODEL_CARD.md", "checkpoints/last/model.safetensors", "checkpoints/last/optimizer.safetensors",
                 "checkpoints/last/state.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "gencraft.json").read_text())
    assert info["kind"] == "gpt" and len(info["run_id"]) == 32 and info["model"]["n_embd"] == 32
    assert info["train"]["max_iters"] == 40 and info["tokenizer"]["kind"] == "char"
    assert info["data"]["manifest_digest"] == "d" * 64 and info["data"]["sources"][0]["license"] == "CC0-1.0"
    assert info["model_digest"] == sha256_file(run / "model.safetensors")
    m = info["metrics"]
    assert m["step"] == 40 and m["tokens_seen"] == 40 * 8 * 32
    assert m["val_ppl"] == pytest.approx(math.exp(m["best_val_loss"]))
    manifest = json.loads((dataset / "manifest.json").read_text())
    tpc = manifest["splits"]["val"]["tokens"] / manifest["splits"]["val"]["chars"]
    assert m["val_bpc"] == pytest.approx(m["best_val_loss"] * tpc / math.log(2))
    # it learned something: far below the uniform-guess loss
    assert m["best_val_loss"] < 0.8 * math.log(manifest["tokenizer"]["vocab_size"])
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [e for e in events if e["split"] == "val"]
    assert [e["step"] for e in vals] == [20, 40] and all("bpc" in e and "ppl" in e for e in vals)
    assert any(e["split"] == "train" and e["tokens_per_s"] > 0 for e in events)
    card = (run / "MODEL_CARD.md").read_text()
    assert "CC0-1.0" in card and "Limitations" in card and "Intended use" in card
    model, _, _ = load_text_model(run)
    logits, cache = model.step(torch.tensor([[1, 2, 3]]), None)
    assert logits.shape == (1, manifest["tokenizer"]["vocab_size"])

    r = evaluate("r1")
    assert r["tokens"] == manifest["splits"]["val"]["tokens"] - 1
    assert math.isfinite(r["loss"]) and r["ppl"] == pytest.approx(math.exp(r["loss"]))
    assert abs(r["loss"] - m["best_val_loss"]) < 0.5  # whole split vs. the in-training estimate
    res = cli("evaluate", "r1")
    assert res.code == 0 and "bits per character" in res.out
    res = cli("evaluate", "r1", "--json")
    assert json.loads(res.out)["loss"] == pytest.approx(r["loss"])


def test_evaluate_refuses_a_dataset_with_another_tokenizer(dataset: Path, tmp_path: Path, cli):
    from gencraft.train.loop import train

    other = write_dataset(tmp_path / "other", ["完全不同的文字。"] * 30 + ["zzz"] * 30)
    train(dataset, out="r", progress=False, overrides=fast("max_iters=5", "eval_interval=5"))
    res = cli("evaluate", "r", "--data", str(other))
    assert res.code == 2 and "tokenizer" in res.err and len(res.err.strip().splitlines()) == 1


def _last_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


@pytest.mark.parametrize("kind, extra", [("gpt", []), ("lstm", ["n_hidden=48", "dropout=0.2"])])
def test_resume_continues_exactly(dataset: Path, kind: str, extra: list[str]):
    """N steps straight == N/2 steps, then --resume for N/2 more (same weights, bit for bit)."""
    from gencraft.train.loop import train

    common = fast("eval_interval=10", "lr_decay_iters=40", "dropout=0.0", *extra)
    if kind == "lstm":
        common = [c for c in common if not c.startswith("n_head")]
    a = train(dataset, model=kind, out="straight", progress=False, overrides=common + ["max_iters=40"])
    b = train(dataset, model=kind, out="halves", progress=False, overrides=common + ["max_iters=20"])
    assert json.loads((b / "checkpoints/last/state.json").read_text())["step"] == 20
    b = train(dataset, model=kind, out="halves", resume=True, progress=False, overrides=["max_iters=40"])
    wa, wb = _last_weights(a), _last_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ia, ib = (json.loads((r / "gencraft.json").read_text()) for r in (a, b))
    assert ia["metrics"]["best_val_loss"] == ib["metrics"]["best_val_loss"]
    assert ib["metrics"]["step"] == 40 and ib["run_id"] != ia["run_id"]


def test_dropout_stream_is_restored_on_resume(dataset: Path):
    from gencraft.train.loop import train

    common = fast("eval_interval=10", "lr_decay_iters=20", "dropout=0.3")
    a = train(dataset, out="a", progress=False, overrides=common + ["max_iters=20"])
    train(dataset, out="b", progress=False, overrides=common + ["max_iters=10"])
    b = train(dataset, out="b", resume=True, progress=False, overrides=["max_iters=20"])
    wa, wb = _last_weights(a), _last_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(dataset: Path, cli):
    from gencraft.train.loop import train

    train(dataset, out="r", progress=False, overrides=fast("max_iters=5", "eval_interval=5"))
    with pytest.raises(UsageError, match="--resume"):
        train(dataset, out="r", progress=False, overrides=fast("max_iters=5"))
    res = cli("train", str(dataset), "--out", "fresh", "--resume")
    assert res.code == 2 and "no checkpoint" in res.err
    with pytest.raises(ConfigError, match="n_embd"):
        train(dataset, out="r", resume=True, progress=False, overrides=["n_embd=64"])


def test_early_stopping_and_max_time(dataset: Path):
    from gencraft.train.loop import train

    # learning rate 0: the validation loss never improves after the first evaluation
    run = train(dataset, out="still", progress=False,
                overrides=fast("learning_rate=0", "min_lr=0", "eval_interval=5", "patience=2", "max_iters=100"))
    m = json.loads((run / "gencraft.json").read_text())["metrics"]
    assert m["step"] == 15 and "early stopping" in m["stopped"]
    run = train(dataset, out="timed", progress=False, max_time=0.5, overrides=fast("max_iters=100000",
                                                                                  "eval_interval=1000"))
    m = json.loads((run / "gencraft.json").read_text())["metrics"]
    assert m["step"] < 100000 and "max_time" in m["stopped"] and (run / "model.safetensors").is_file()
    assert json.loads((run / "checkpoints/last/state.json").read_text())["step"] == m["step"]


def test_divergence_stops_and_keeps_the_last_good_checkpoint(dataset: Path):
    from gencraft.train.loop import train

    run = train(dataset, out="r", progress=False, overrides=fast("max_iters=10", "eval_interval=10"))
    before = _last_weights(run)
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(dataset, out="r", resume=True, progress=False,
              overrides=["learning_rate=10", "min_lr=10", "warmup_iters=0", "max_iters=60",
                         "log_interval=1", "grad_clip=0"])
    state = json.loads((run / "checkpoints/last/state.json").read_text())
    assert state["step"] == 10
    after = _last_weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_train_prints_the_run_and_next_command(dataset: Path, cli):
    res = cli("train", str(dataset), "--model", "lstm", "--out", "cl", "--seed", "3", "-q",
              "--set", "n_embd=16", "--set", "n_hidden=32", "--set", "block_size=16", "--set", "max_iters=10",
              "--set", "eval_interval=5", "--set", "eval_iters=2", "--set", "num_threads=1")
    assert res.code == 0, res.err
    assert "gencraft generate" in res.out and "cl" in res.out
    info = json.loads((Path(os.environ["GENCRAFT_HOME"]) / "runs/cl/gencraft.json").read_text())
    assert info["kind"] == "lstm" and info["train"]["seed"] == 3


@pytest.mark.parametrize("args, word", [(["--set", "bogus=1"], "bogus"), (["--set", "n_layer=x"], "integer"),
                                        (["--preset", "huge"], "--preset"), (["--model", "rnn"], "--model")])
def test_cli_bad_options_are_one_line_errors(dataset: Path, cli, args: list[str], word: str):
    res = cli("train", str(dataset), "--out", "x", *args)
    assert res.code == 2 and word in res.err
    assert len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err


def test_cli_missing_dataset_and_corrupted_weights(dataset: Path, cli):
    from gencraft.train.loop import train

    res = cli("train", "no-such-dataset", "--out", "x")
    assert res.code == 2 and "no-such-dataset" in res.err
    run = train(dataset, out="r", progress=False, overrides=fast("max_iters=5", "eval_interval=5"))
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    res = cli("evaluate", "r")
    assert res.code == 2 and "model.safetensors" in res.err and "corrupted" in res.err
    assert len(res.err.strip().splitlines()) == 1
    (run / "model.safetensors").write_bytes(b"\x00" * 64)
    assert cli("evaluate", "r").code == 2


def test_too_little_data_for_the_context_is_a_clear_error(tmp_path: Path):
    from gencraft.errors import DataError
    from gencraft.train.loop import train

    ds = write_dataset(tmp_path / "small", ["ab"] * 40, val_fraction=0.05)
    with pytest.raises(DataError, match="block_size"):
        train(ds, out="r", progress=False, overrides=["block_size=64"])


# ---------------------------------------------------------------- processes: SIGKILL (torchrun: tests/test_distributed.py)

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sigkill_then_resume_loses_at_most_one_checkpoint_interval(dataset: Path):
    run = Path(os.environ["GENCRAFT_HOME"]) / "runs" / "killed"
    args = [sys.executable, "-m", "gencraft", "train", str(dataset), "--out", "killed", "-q",
            *[a for s in fast("max_iters=100000", "eval_interval=20", "checkpoint_interval=10")
              for a in ("--set", s)]]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run / "checkpoints" / "last" / "state.json"
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = json.loads(state.read_text())["step"]
    assert saved >= 10 and saved % 10 == 0
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    reached = max(e["step"] for e in events)
    assert reached - saved < 10 + 5  # lost less than one checkpoint interval (+ one log interval)
    from gencraft.train.loop import train

    train(dataset, out="killed", resume=True, progress=False, overrides=[f"max_iters={saved + 10}"])
    info = json.loads((run / "gencraft.json").read_text())
    assert info["metrics"]["step"] == saved + 10
    assert json.loads(state.read_text())["step"] == saved + 10


# ---------------------------------------------------------------- end to end with the real pipeline

def test_end_to_end_prepare_train_generate_evaluate_resume(shared_data: Path, cli):
    """tang300 (Chinese, --field paragraphs) -> prepare -> train -> generate -> evaluate -> resume."""
    import gencraft

    ds = gencraft.prepare([shared_data / "tang300.json"], out="tang", field="paragraphs", license="CC0-1.0")
    run = gencraft.train(ds, model="gpt", preset="tiny", out="tang-gpt", progress=False,
                         overrides=["max_iters=30", "eval_interval=15", "eval_iters=4", "batch_size=8", "num_threads=1"])
    info = json.loads((run / "gencraft.json").read_text())
    assert info["data"]["sources"][0]["license"] == "CC0-1.0" and info["tokenizer"]["kind"] == "char"
    result = gencraft.load(run).generate("西陸", max_new_tokens=12, temperature=0.8, seed=1)
    assert isinstance(result.text, str) and result.text
    ev = gencraft.evaluate(run)
    assert math.isfinite(ev["bpc"]) and ev["bpc"] > 0
    res = cli("train", "tang", "--out", "tang-gpt", "--resume", "-q", "--set", "max_iters=45")  # keeps num_threads
    assert res.code == 0, res.err
    assert json.loads((run / "gencraft.json").read_text())["metrics"]["step"] == 45
    res = cli("evaluate", "tang-gpt")
    assert res.code == 0 and "perplexity" in res.out


def test_lstm_end_to_end_on_a_folder_of_text(tmp_path: Path):
    import gencraft

    src = tmp_path / "stories"
    src.mkdir()
    for i, doc in enumerate(corpus(60, seed=2)):
        (src / f"{i:03d}.txt").write_text(doc + "\n", encoding="utf-8")
    ds = gencraft.prepare([src], out="stories", license="CC-BY-4.0")
    run = gencraft.train(ds, model="lstm", preset="tiny", out="st", progress=False,
                         overrides=["max_iters=40", "eval_interval=20", "eval_iters=4", "block_size=32", "num_threads=1"])
    m = json.loads((run / "gencraft.json").read_text())["metrics"]
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][0]
    assert m["best_val_loss"] < first["loss"]  # the loss went down
    assert gencraft.load(run).generate("the", max_new_tokens=10, temperature=0).text
