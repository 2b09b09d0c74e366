"""Decoding a text VAE's latent space: texts from latents, interpolation between two texts,
variations of one. Every token goes through the one sampling core (the engine's Decoder), as for
every other text model; the VAE only starts each row's decoder state from its latent."""

from __future__ import annotations

import torch

from gencraft.generate.config import GenerationConfig
from gencraft.generate.engine import Decoder
from gencraft.models.text_vae import TextVAE, VAEState, encode_texts


def decode_latents(model: TextVAE, tokenizer, z: torch.Tensor, max_new_tokens: int | None = None,
                   temperature: float = 0.0, generator: torch.Generator | None = None,
                   options: dict | None = None) -> list[str]:
    """Text of each latent in ``z`` ``[N, Z]``, decoded by the engine (the sampling core, as every
    text model): greedy at ``temperature=0``, sampled otherwise (the seed drawn from ``generator``);
    each stops at the end-of-text token. ``options``: more generation options (the watermark's
    sampler, from ``guard.watermark_options``)."""
    seed = None if generator is None else int(torch.randint(0, 1 << 62, (1,), generator=generator))
    cfg = GenerationConfig.from_options(None, max_new_tokens=max_new_tokens or model.config.block_size,
                                        temperature=temperature, seed=seed, **(options or {}))
    prompts = [[model.config.eos_id]] * z.shape[0]  # the engine's start for an empty prompt: stands for BOS
    return [r[0].text for r in Decoder(_WithLatents(model, z), tokenizer, prompts, cfg).run()]


class _WithLatents:
    """A text VAE whose decoder states start from given latents: row ``i`` of a new cache gets ``z[i]``."""

    max_context = None

    def __init__(self, model: TextVAE, z: torch.Tensor) -> None:
        self.model, self.z = model, z

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def parameters(self):
        return self.model.parameters()

    def new_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> VAEState:
        return self.model.new_cache(batch_size, z=self.z)

    def step(self, token_ids: torch.Tensor, cache: VAEState) -> tuple[torch.Tensor, VAEState]:
        return self.model.step(token_ids, cache)


def interpolate(model: TextVAE, tokenizer, text_a: str, text_b: str, steps: int = 8) -> list[str]:
    """Greedy decodings of ``steps`` evenly spaced points from ``text_a``'s posterior mean to ``text_b``'s."""
    mu, _ = encode_texts(model, tokenizer, [text_a, text_b])
    t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
    return decode_latents(model, tokenizer, (1 - t) * mu[0] + t * mu[1])


def vary(model: TextVAE, tokenizer, text: str, n: int = 5, radius: float = 0.5, seed: int = 0,
         temperature: float = 0.0, options: dict | None = None) -> list[str]:
    """``n`` variations of ``text``: greedy decodings of ``z = mu + radius * eps``, ``eps ~ N(0, I)``
    (``radius`` in the prior's units: 0 gives the reconstruction, ~1 roams far)."""
    mu, _ = encode_texts(model, tokenizer, [text])
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, mu.shape[1], generator=g).to(mu.device)
    return decode_latents(model, tokenizer, mu + radius * eps, temperature=temperature, generator=g,
                          options=options)
