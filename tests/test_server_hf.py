"""A local Hugging Face model through the server: listed as hf:PATH, its chat template used, batched in waves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
openai = pytest.importorskip("openai")
from test_server import LiveServer  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402
from gencraft.tokenize import train_tokenizer  # noqa: E402

CORPUS = ["the cat sat on the mat. ", "a dog ran in the park! ", "<|user|> hi <|assistant|> hello "] * 12
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_tokenizer("bpe", CORPUS, vocab_size=320)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=128, vocab_size=tok.vocab_size,
                                   bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=tok.eos_token,
                                                  bos_token=tok.eos_token, clean_up_tokenization_spaces=False)
    hf_tok.chat_template = TEMPLATE
    path = tmp_path_factory.mktemp("hfchat")
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def test_hf_model_chat_template_and_waves(hf_model: Path, tmp_path: Path) -> None:
    from gencraft.backends import load

    spec = f"hf:{hf_model}"
    with LiveServer(ServerConfig(auth=False, home=tmp_path, hf_models=[spec], rate_per_minute=0)) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        assert spec in {m.id for m in client.models.list().data}
        msgs = [{"role": "user", "content": "hi"}]
        r = client.chat.completions.create(model=spec, messages=msgs, max_tokens=8, temperature=0)
        tm = load(spec)
        want = tm.generate("<|user|> hi <|assistant|>", max_new_tokens=8, temperature=0).text
        assert r.choices[0].message.content == want

        async def many() -> list[str]:
            aclient = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
            outs = await asyncio.gather(*(aclient.completions.create(model=spec, prompt=p, max_tokens=6, temperature=0)
                                          for p in ("the cat", "a dog ran", "the")))
            return [o.choices[0].text for o in outs]

        got = asyncio.run(many())
        assert got == [tm.generate(p, max_new_tokens=6, temperature=0).text for p in ("the cat", "a dog ran", "the")]
