"""Hugging Face interop: local HF models through the engine, and GPT export with logits parity."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from gencraft.backends import load
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.runs import save_weights, write_info
from gencraft.tokenize import train_tokenizer

transformers = pytest.importorskip("transformers")

CORPUS = ["the cat sat on the mat. ", "a dog ran in the park! ", "héllo wörld, 你好世界. "] * 12


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("bpe", CORPUS, vocab_size=320)


def hf_tokenizer(tok):
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=tok.eos_token,
                                                bos_token=tok.eos_token, clean_up_tokenization_spaces=False)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hf_dir(request, tok, tmp_path_factory):
    """A tiny random Hugging Face model of each architecture, saved locally (nothing downloaded)."""
    torch.manual_seed(0)
    common = dict(vocab_size=tok.vocab_size, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    if request.param == "gpt2":
        cfg = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, **common)
    else:
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=64, **common)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # peaked distributions: distinct greedy paths
        model.get_input_embeddings().weight.mul_(30)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    hf_tokenizer(tok).save_pretrained(path)
    return path


def test_hf_greedy_matches_transformers_generate(hf_dir, cli):
    tm = load(f"hf:{hf_dir}")
    assert tm.info["kind"] == "hf"
    ids = tm.tokenizer.encode("the cat sat")
    ours = tm.generate("the cat sat", max_new_tokens=12, temperature=0)
    ref = tm.model.hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                               attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
    if tm.tokenizer.eos_id in ref:
        ref = ref[:ref.index(tm.tokenizer.eos_id)]
    assert ours.token_ids == ref
    r = cli("generate", f"hf:{hf_dir}", "--prompt", "the cat sat", "--max-new-tokens", "12", "--temperature", "0")
    assert r.code == 0 and r.out == "the cat sat" + ours.text + "\n"


def test_hf_batch_left_padding_and_stream(hf_dir):
    tm = load(f"hf:{hf_dir}")
    prompts = ["the cat sat on the", "a", "héllo wörld"]
    batch = tm.generate(prompts, max_new_tokens=10, temperature=0, stop_at_eos=False)
    for p, got in zip(prompts, batch, strict=True):
        assert got.token_ids == tm.generate(p, max_new_tokens=10, temperature=0, stop_at_eos=False).token_ids
    opts = dict(max_new_tokens=15, temperature=1.0, top_p=0.9, seed=5, stop=["e "])
    assert "".join(tm.stream("the", **opts)) == tm.generate("the", **opts).text
    beams = tm.generate("the", max_new_tokens=6, num_beams=3, n=2)
    assert len(beams) == 2 and beams[0].score >= beams[1].score


def test_hf_window_slides_past_max_positions(hf_dir):
    tm = load(f"hf:{hf_dir}")
    res = tm.generate("the cat " * 30, max_new_tokens=30, temperature=0)  # > 64 positions in all
    assert res.completion_tokens > 0


@pytest.fixture
def gpt_run(tok, tmp_path):
    torch.manual_seed(1)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # non-trivial norms so a wrong mapping of weights would show
        for name, p in m.named_parameters():
            if "ln" in name:
                p.normal_(1.0, 0.2)
    path = tmp_path / "run"
    path.mkdir()
    save_weights(m, path / "model.safetensors")
    tok.save(path / "tokenizer.json")
    write_info(path, {"kind": "gpt", "model": dataclasses.asdict(m.config)})
    return m, path


def test_export_hf_logits_parity(gpt_run, tok, tmp_path, cli):
    model, run = gpt_run
    out = tmp_path / "exported"
    r = cli("export", str(run), "--format", "hf", "--out", str(out))
    assert r.code == 0, r.err
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "the cat sat on the mat, héllo 你好"
    assert hf_tok(text)["input_ids"] == tok.encode(text)
    ids = torch.tensor([tok.encode(text)[:32]])
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    native = load(str(run)).generate("the", max_new_tokens=10, temperature=0, stop_at_eos=False)
    via_hf = load(f"hf:{out}").generate("the", max_new_tokens=10, temperature=0, stop_at_eos=False)
    assert native.token_ids == via_hf.token_ids and native.text == via_hf.text


def sentencepiece_style_tokenizer(path):
    """A Llama-2-style fast tokenizer: ``▁`` for spaces, ``<0xXX>`` byte fallback, BOS added."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    norm = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    pre = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer, trained.pre_tokenizer = norm, pre
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"],
                                                            show_progress=False))
    vocab = trained.get_vocab()
    for b in range(256):  # byte tokens are ordinary vocabulary entries, as in Llama's tokenizer.json
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(trained.to_str())["model"]["merges"]]
    t = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.normalizer, t.pre_tokenizer = norm, pre
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>", clean_up_tokenization_spaces=False)
    fast.save_pretrained(path)
    return fast


def test_sentencepiece_style_tokenizer_bytes_and_text(tmp_path):
    """Token bytes of a ``▁``/``<0xXX>`` vocabulary rebuild exactly what the tokenizer decodes, so
    generated text (built from token bytes, streamed or not) is the decoded continuation."""
    fast = sentencepiece_style_tokenizer(tmp_path)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64, vocab_size=len(fast),
                                   bos_token_id=1, eos_token_id=2)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    tm = load(f"hf:{tmp_path}")
    table = tm.tokenizer.token_bytes_table()
    assert table[fast.convert_tokens_to_ids("<0x0A>")] == b"\n" and table[1] == b""  # byte token; BOS adds nothing
    for text in ["the cat sat on the mat.", "héllo wörld, 你好世界. a dog", "tabs\tand\nnew lines ☃"]:
        ids = tm.tokenizer.encode(text)
        assert ids[0] == 1
        assert b"".join(table[i] for i in ids).decode("utf-8") == " " + text  # the leading ▁ of SentencePiece
    prompt = "the cat"
    # lone bytes >= 0x80 make invalid UTF-8, which HF and gencraft replace differently: ban them
    opts = dict(max_new_tokens=24, temperature=1.0, seed=3, stop_at_eos=False,
                logit_bias={fast.convert_tokens_to_ids(f"<0x{b:02X}>"): -100 for b in range(0x80, 0x100)})
    res = tm.generate(prompt, **opts)
    p_ids = tm.tokenizer.encode(prompt)
    assert prompt + res.text == fast.decode(p_ids + res.token_ids, skip_special_tokens=True)
    assert "".join(tm.stream(prompt, **opts)) == res.text
