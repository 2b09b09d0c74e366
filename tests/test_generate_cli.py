"""`gencraft generate` and `gencraft export` on the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from gencraft.models.gpt import GPT, GPTConfig
from gencraft.models.lstm import LSTMLM, LSTMConfig
from gencraft.paths import run_path
from gencraft.runs import save_weights, write_info
from gencraft.tokenize import train_tokenizer


@pytest.fixture
def runs():
    """Two tiny random runs under GENCRAFT_HOME: 'g' (GPT) and 'l' (LSTM)."""
    tok = train_tokenizer("char", ["the cat sat on the mat. a dog ran in the park! 你好"])
    torch.manual_seed(0)
    models = {"g": ("gpt", GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))),
              "l": ("lstm", LSTMLM(LSTMConfig(vocab_size=tok.vocab_size, n_layer=1, n_embd=16, n_hidden=16)))}
    for name, (kind, m) in models.items():
        p = run_path(name)
        p.mkdir(parents=True)
        save_weights(m, p / "model.safetensors")
        tok.save(p / "tokenizer.json")
        write_info(p, {"kind": kind, "model": dataclasses.asdict(m.config)})
    return tok


def test_generate_streams_and_is_repeatable(cli, runs):
    for run in ("g", "l"):
        a = cli("generate", run, "--prompt", "the", "--max-new-tokens", "12", "--seed", "3", "--top-k", "20")
        b = cli("generate", run, "--prompt", "the", "--max-new-tokens", "12", "--seed", "3", "--top-k", "20",
                "--no-stream")
        assert a.code == 0, a.err
        assert a.out.startswith("the") and a.out == b.out


def test_generate_json_with_every_option(cli, runs, tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("a dog", encoding="utf-8")
    r = cli("generate", "g", "--prompt-file", prompt, "--json", "--n", "2", "--temperature", "0.9",
            "--top-p", "0.9", "--min-p", "0.01", "--typical-p", "0.99", "--repetition-penalty", "1.2",
            "--presence-penalty", "0.5", "--frequency-penalty", "0.5", "--no-repeat-ngram", "3",
            "--ban", "cat", "--logit-bias", "t=-100", "--logit-bias", "5=1.5", "--stop", "!!",
            "--seed", "1", "--max-time", "30", "--logprobs", "2", "--max-new-tokens", "9")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert len(data["results"]) == 2 and data["prompt"] == "a dog"
    for res in data["results"]:
        assert "cat" not in res["text"] and "t" not in res["text"]
        assert len(res["logprobs"]) == res["completion_tokens"] and len(res["logprobs"][0]["top"]) == 2
    beams = cli("generate", "g", "--prompt", "the", "--num-beams", "4", "--beam-groups", "2",
                "--diversity-penalty", "1.0", "--n", "3", "--length-penalty", "0.8", "--max-new-tokens", "5")
    assert beams.code == 0, beams.err
    assert beams.out.count("--- sample") == 3


@pytest.mark.parametrize(("args", "needle"), [
    (["--top-p", "1.5"], "top_p"), (["--top-p", "0"], "top_p"), (["--temperature", "-1"], "temperature"),
    (["--num-beams", "0"], "num_beams"), (["--logit-bias", "oops"], "logit-bias"), (["--dtype", "int3"], "dtype"),
])
def test_bad_options_are_one_line_errors(cli, runs, args, needle):
    r = cli("generate", "g", "--prompt", "x", *args)
    assert r.code == 2 and needle in r.err and r.err.strip().count("\n") == 0 and "Traceback" not in r.err


def test_unknown_run_and_bad_export(cli, runs, tmp_path):
    r = cli("generate", "nope", "--prompt", "x")
    assert r.code == 2 and "nope" in r.err and r.err.strip().count("\n") == 0
    r = cli("generate", f"hf:{tmp_path / 'missing'}", "--prompt", "x")
    assert r.code == 2 and "config.json" in r.err
    r = cli("export", "l", "--format", "hf", "--out", tmp_path / "x")
    assert r.code == 2 and "lstm" in r.err
    r = cli("export", "g", "--format", "onnx", "--out", tmp_path / "x")
    assert r.code == 2 and "format" in r.err


def test_error_messages_print_names_as_given(cli, tmp_path) -> None:
    """Paths and values in errors are plain text, never Rich markup: [draft] stays, [/] cannot raise."""
    run = tmp_path / "[draft]" / "run"
    r = cli("generate", run, "-p", "x")
    assert r.code == 2 and "[draft]" in r.err and "Traceback" not in r.err, r.err
    r = cli("generate", "nope", "--prompt-file", f"{tmp_path}/a[/]b.txt")
    assert r.code == 2 and "a[/]b.txt" in r.err and r.err.count("\n") == 1, r.err
    r = cli("imagine", f"{tmp_path}/[bold]x[/]")
    assert r.code == 2 and "[bold]x[/]" in r.err, r.err
