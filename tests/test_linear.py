"""The CPU decoding path (models/linear.py, models/decode.py): same numbers as F.linear, same tokens, a
sane tuner, thread settings confined to the decoding thread, no environment changed by importing gencraft."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gencraft.generate import GenerationConfig, generate
from gencraft.models import decode as D
from gencraft.models import linear as L
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.tokenize import train_tokenizer


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.0)])
@pytest.mark.parametrize("shape", [(1, 1, 48), (3, 1, 48), (2, 5, 48), (48,)])
def test_fast_path_matches_f_linear(dtype, tol, shape):
    torch.manual_seed(0)
    lin = L.Linear(48, 80, bias=True).to(dtype)
    x = torch.randn(*shape).to(dtype)
    ref = F.linear(x, lin.weight, lin.bias)
    with D.session(lin), torch.inference_mode():
        got = lin(x)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if dtype == torch.bfloat16:  # oneDNN may round differently from ATen's bf16 linear: within bf16's step
        torch.testing.assert_close(got.float(), ref.float(), atol=0.05, rtol=0.02)
    else:
        torch.testing.assert_close(got, ref, atol=tol, rtol=tol)


def test_weight_updates_are_seen():
    """The cached numpy view / packed weight follows in-place writes and replaced parameters."""
    lin = L.Linear(8, 4, bias=False)
    x = torch.ones(1, 8)
    for dtype in (torch.float32, torch.bfloat16):
        lin, x = lin.to(dtype), x.to(dtype)
        with D.session(lin), torch.inference_mode():
            first = lin(x).clone()
        with torch.no_grad():
            lin.weight.mul_(2)
        with D.session(lin), torch.inference_mode():
            torch.testing.assert_close(lin(x), 2 * first)
        lin.weight = nn.Parameter(torch.zeros(4, 8, dtype=dtype))
        with D.session(lin), torch.inference_mode():
            assert lin(x).abs().sum() == 0


def test_training_is_untouched():
    lin = L.Linear(8, 4)
    with D.session(lin):
        y = lin(torch.randn(2, 8)).sum()  # grad enabled: plain F.linear, autograd works
    y.backward()
    assert lin.weight.grad is not None


def test_threads_set_on_the_decoding_thread_only():
    """A session runs torch's ops on one thread on the thread that entered it (re-entrant), restores
    the count on exit, and leaves other threads and the default of new threads alone."""
    import threading

    m = L.Linear(4, 4)
    torch.set_num_threads(2)  # (the one_thread fixture restores the suite's setting)
    before = torch.get_num_threads()
    seen: dict[str, int] = {}
    inside, done = threading.Event(), threading.Event()

    def other() -> None:
        torch.get_num_threads()
        inside.wait(10)
        seen["other"] = torch.get_num_threads()
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with D.session(m):
        assert torch.get_num_threads() == 1
        with D.session(m):  # re-entrant
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1 and D.active() is D.session(m)
        inside.set()
        done.wait(10)
        fresh: list[int] = []
        th = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        th.start()
        th.join()
    t.join()
    assert torch.get_num_threads() == before and D.active() is None
    assert seen["other"] == before and fresh == [before]


def test_use_fast_linear_swaps_only_plain_linears():
    class Mine(nn.Linear):
        pass
    model = nn.Sequential(nn.Linear(4, 4), Mine(4, 4), nn.ReLU())
    keys = set(model.state_dict())
    L.use_fast_linear(model)
    assert type(model[0]) is L.Linear and type(model[1]) is Mine and isinstance(model[0], nn.Linear)
    assert set(model.state_dict()) == keys


def test_greedy_tokens_same_with_and_without_fast_path(monkeypatch):
    tok = train_tokenizer("char", ["the quick brown fox jumps over the lazy dog. " * 20])
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=tok.vocab_size, block_size=64)).eval()
    cfg = GenerationConfig(max_new_tokens=40, temperature=0, stop_at_eos=False)
    prompts = ["the quick", "lazy"]
    fast = [r[0].token_ids for r in generate(model, tok, prompts, cfg)]
    with D.DecodeSession(model, fast_linear=False, native=False):  # an explicit session: the engine uses it
        plain = [r[0].token_ids for r in generate(model, tok, prompts, cfg)]
    assert fast == plain


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_model_that_has_decoded_copies_and_pickles(dtype):
    """The fast path's derived weights (oneDNN's packed copy: a short prompt, bf16; numpy views) are
    the decode session's, never the modules': a model that has decoded copies and saves whole, and
    the copy (a session of its own) decodes the same tokens."""
    import copy
    import io

    tok = train_tokenizer("char", ["the quick brown fox jumps over the lazy dog. " * 20])
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=tok.vocab_size, block_size=64)).eval().to(dtype)
    cfg = GenerationConfig(max_new_tokens=12, temperature=0, stop_at_eos=False)
    first = generate(model, tok, ["the quick", "lazy"], cfg)  # batched rows: oneDNN's packed weights
    assert D.session(model)._derived and not any(k.startswith("_gencraft") for mod in model.modules()
                                                 for k in mod.__dict__)
    twin = copy.deepcopy(model)
    assert D.session(twin) is not D.session(model)
    assert [r[0].token_ids for r in generate(twin, tok, ["the quick", "lazy"], cfg)] == [r[0].token_ids for r in first]
    buf = io.BytesIO()
    torch.save(model, buf)  # writing only (a packed oneDNN tensor could not be pickled)
    assert buf.tell() > 0


class _FakeClock:
    """A clock that each matmul advances by what the current thread setting costs."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.now = 0.0
        self.cost = cost
        self.threads = 0
        self.calls = {1: 0, 2: 0}

    def set_threads(self, n: int) -> None:
        self.threads = n

    def matmul(self) -> None:
        self.calls[self.threads] += 1
        self.now += self.cost[self.threads]


@pytest.mark.parametrize("cost, winner", [({1: 2e-4, 2: 1e-4}, 2),   # idle machine: split wins
                                          ({1: 2e-4, 2: 4e-3}, 1)])  # other core busy: split stalls
def test_thread_tuner_settles_on_the_faster_setting(monkeypatch, cost, winner):
    clock = _FakeClock(cost)
    monkeypatch.setattr(D.time, "perf_counter", lambda: clock.now)
    tuner = D.ThreadTuner(2, clock.set_threads)
    for _ in range(20_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == winner
    loser = 3 - winner
    # probing the loser is rare: a few percent of calls when it is close, well under 1% when it stalls
    share = clock.calls[loser] / 20_000
    assert share < (0.005 if winner == 1 else 0.2)


def test_thread_tuner_follows_a_change(monkeypatch):
    clock = _FakeClock({1: 2e-4, 2: 1e-4})
    monkeypatch.setattr(D.time, "perf_counter", lambda: clock.now)
    tuner = D.ThreadTuner(2, clock.set_threads)
    for _ in range(5_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 2
    clock.cost[2] = 4e-3  # someone starts a job on the other core
    for _ in range(5_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 1
    clock.cost[2] = 1e-4  # and stops
    for _ in range(60_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 2


def test_fixed_threads_never_probe(monkeypatch):
    clock = _FakeClock({1: 2e-4, 2: 1e-4})
    tuner = D.ThreadTuner(2, clock.set_threads, fixed=1)
    for _ in range(1000):
        tuner.run(1 << 20, clock.matmul)
    assert clock.calls == {1: 1000, 2: 0}


def test_hf_gpt2_conv1d_gets_the_fast_path(monkeypatch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    x = torch.randint(0, 50, (2, 7))
    with torch.inference_mode():
        ref = hf(x).logits
    keys = set(hf.state_dict())
    L.use_fast_linear(hf)
    conv = hf.transformer.h[0].attn.c_attn
    assert type(conv).__name__ == "FastConv1D" and set(hf.state_dict()) == keys
    calls = []
    blas = D.DecodeSession._blas
    monkeypatch.setattr(D.DecodeSession, "_blas", lambda self, m, x, w, b, out_in: calls.append(out_in)
                        or blas(self, m, x, w, b, out_in))
    with D.session(hf), torch.inference_mode():
        got = hf(x).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert calls.count(False) == 4  # c_attn, c_proj, c_fc, mlp.c_proj (Conv1D, weights [in, out])


def test_importing_gencraft_leaves_the_environment_alone():
    import json
    import os
    import subprocess
    import sys

    code = ("import json, os\n"
            "before = dict(os.environ)\n"
            "import gencraft, gencraft.cli, gencraft.generate, gencraft.backends\n"
            "print(json.dumps([before, dict(os.environ)]))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout)
    assert after == before


def test_a_process_asks_for_its_thread_policy():
    """Before torch loads, a process says what it will do (the CLI's generate/serve/train, the
    bench scripts) and gets that policy, the user's own settings winning; once torch is in, it is
    too late and nothing changes."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, os, gencraft
names = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
out = []
for kind, env in (("decode", {}), ("train", {}), ("train", {"OMP_WAIT_POLICY": "ACTIVE"}),
                  ("decode", {"OPENBLAS_THREAD_TIMEOUT": "4"})):
    for k in names:
        os.environ.pop(k, None)
    os.environ.update(env)
    ok = gencraft.use_thread_policy(kind)
    out.append([ok] + [os.environ.get(k) for k in names])
for k in names:
    os.environ.pop(k, None)
import gencraft.cli, numpy  # the CLI loads numpy (music), not torch: training's OpenMP policy still applies
out.append([gencraft.use_thread_policy("train"), os.environ.get("OMP_WAIT_POLICY")])
out.append([gencraft.use_thread_policy("decode"), os.environ.get("OPENBLAS_THREAD_TIMEOUT")])
import torch
before = dict(os.environ)
out.append([gencraft.use_thread_policy("train"), dict(os.environ) == before])
print(json.dumps(out))
"""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    got = json.loads(subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True,
                                    check=True).stdout)
    assert got == [[True, None, "16"], [True, "PASSIVE", None], [True, "ACTIVE", None], [True, None, "4"],
                   [True, "PASSIVE"], [False, None], [False, True]]
    import gencraft
    from gencraft.errors import UsageError

    with pytest.raises(UsageError, match="kind"):
        gencraft.use_thread_policy("fast")


def test_step_tuner_starts_split_and_probes_cheaply(monkeypatch):
    """The C decode step's tuner (a call = a whole step): on an idle machine it starts on all cores,
    and its probes of one thread stop after two slow steps."""
    clock = _FakeClock({1: 2e-3, 2: 1.2e-3})
    monkeypatch.setattr(D.time, "perf_counter", lambda: clock.now)
    tuner = D.ThreadTuner(2, clock.set_threads, window=8, start=2)
    for _ in range(8):
        tuner.run(1 << 20, clock.matmul)
    assert clock.calls == {1: 0, 2: 8}
    for _ in range(2_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 2
    assert clock.calls[1] / 2_008 < 0.02


def test_step_tuner_close_settings_probe_rarely(monkeypatch):
    """A memory-bound step on one core of two is only ~1.3x slower: probes of it stop after two
    steps and come ever less often (not a whole window every few), and a window that only looks
    faster by chance does not switch."""
    clock = _FakeClock({1: 1.3e-3, 2: 1e-3})
    monkeypatch.setattr(D.time, "perf_counter", lambda: clock.now)
    tuner = D.ThreadTuner(2, clock.set_threads, window=8, start=2)
    for _ in range(2_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 2
    assert clock.calls[1] / 2_000 < 0.01
    clock.cost[1] = 0.95e-3  # one thread a hair faster: not worth switching for
    for _ in range(2_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 2


def test_step_tuner_leaves_a_split_that_stalls_at_once(monkeypatch):
    """After long quiet stretches the probes are far apart; a split that suddenly stalls (another
    process took a core) is left within a couple of windows, not at the next scheduled probe."""
    clock = _FakeClock({1: 2e-3, 2: 1e-3})
    monkeypatch.setattr(D.time, "perf_counter", lambda: clock.now)
    tuner = D.ThreadTuner(2, clock.set_threads, window=8, start=2)
    for _ in range(20_000):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 2 and tuner.gap == tuner.MAX_GAP
    clock.cost[2] = 2e-2
    before = clock.calls[2]
    for _ in range(40):
        tuner.run(1 << 20, clock.matmul)
    assert tuner.mode == 1 and clock.calls[2] - before <= 24
