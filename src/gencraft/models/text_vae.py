"""Text VAE: a sentence variational autoencoder (Bowman et al., 2016, "Generating Sentences from
a Continuous Space").

Read top to bottom: config -> encoder (a GRU over the sentence) -> Gaussian latent
``z = mu + sigma * eps`` -> decoder (GRU language model conditioned on ``z``) -> the loss pieces.

The decoder is conditioned twice, because an RNN decoder that is strong enough to model text on
its own learns to ignore ``z`` (posterior collapse): ``z`` sets the decoder's initial state and is
concatenated to every input embedding (``z_to_input``). The measures that keep the latent in use
live partly here (word dropout: decoder inputs replaced by a mask token, so the decoder has to
lean on ``z``) and partly in the training loop (KL annealing, free bits; ``gencraft.train.text_vae``).

Token ids: the tokenizer's ids ``0..vocab_size-1``, plus two ids of the model's own: ``bos_id =
vocab_size`` starts every decoded sentence and ``mask_id = vocab_size + 1`` is the word-dropout
token. Logits cover the tokenizer's vocabulary only.

Generation uses the project's step interface: the cache (:class:`VAEState`) holds ``z`` beside the
GRU state, so the decoding engine samples a text VAE like any other model: ``new_cache`` draws
``z`` from the prior (or takes one: interpolation, variations), ``step`` feeds tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.config import Limit, Range


@dataclass
class TextVAEConfig:
    vocab_size: int = 256
    block_size: int = 64  # longest sentence in tokens (with its end token); longer ones are cut
    n_embd: int = 128
    n_hidden: int = 256
    n_latent: int = 32
    n_layer: int = 1  # decoder GRU layers
    dropout: float = 0.1  # on embeddings and decoder outputs
    word_dropout: float = 0.0  # share of decoder inputs replaced by the mask token while training (0.25-0.5 helps
    # keep z in use without free bits; Bowman et al.)
    z_to_input: bool = True  # concatenate z to every decoder input (besides the initial state)
    variational: bool = True  # False: encoder unused, z = 0 -> the same decoder as a plain LM
    eos_id: int = 0  # the tokenizer's end-of-text id (ends sentences)
    LIMITS: ClassVar[dict[str, Limit]] = {  # allowed values (gencraft.config.validate); memory is checked apart
        "vocab_size": Range(1, 1 << 22), "block_size": Range(2, 1 << 14), "n_embd": Range(1, 1 << 16),
        "n_hidden": Range(1, 1 << 16), "n_latent": Range(1, 1 << 14), "n_layer": Range(1, 64),
        "dropout": Range(0, 1, hi_open=True), "word_dropout": Range(0, 1, hi_open=True),
        "eos_id": Range(0, (1 << 22) - 1)}


PRESETS: dict[str, dict] = {
    "tiny": dict(n_embd=64, n_hidden=128, n_latent=16, block_size=48),
    "small": dict(n_embd=128, n_hidden=256, n_latent=32, block_size=64),
    "base": dict(n_embd=256, n_hidden=512, n_latent=64, block_size=128),
}


class VAEState:
    """The step cache of a text VAE: the decoder's GRU state ``h`` ``[n_layer, B, H]`` and ``z`` ``[B, Z]``."""

    def __init__(self, h: torch.Tensor, z: torch.Tensor) -> None:
        self.h, self.z = h, z
        self.length = 0
        self.n_pad: torch.Tensor | None = None  # left padding of the next (prefill) step, per row

    def left_pad(self, n_pad: torch.Tensor) -> None:
        """Row ``b``'s first ``n_pad[b]`` tokens of the next step are padding (prompts of different lengths)."""
        self.n_pad = n_pad

    @property
    def batch_size(self) -> int:
        return self.z.shape[0]

    def select(self, rows: torch.Tensor) -> VAEState:
        new = VAEState(self.h[:, rows], self.z[rows])
        new.length = self.length
        new.n_pad = None if self.n_pad is None else self.n_pad[rows]
        return new


class TextVAE(nn.Module):
    kind = "text_vae"

    def __init__(self, cfg: TextVAEConfig) -> None:
        super().__init__()
        self.config = cfg
        V, E, H, Z = cfg.vocab_size, cfg.n_embd, cfg.n_hidden, cfg.n_latent
        self.bos_id, self.mask_id = V, V + 1
        self.wte = nn.Embedding(V + 2, E)  # shared by encoder and decoder
        self.drop = nn.Dropout(cfg.dropout)
        # encoder: a GRU read left to right; its state after the last token summarizes the sentence
        self.encoder = nn.GRU(E, H, batch_first=True)
        self.to_mu = nn.Linear(H, Z)
        self.to_logvar = nn.Linear(H, Z)
        # decoder: z -> initial state; GRU over [token embedding ; z]
        self.z_to_h = nn.Linear(Z, cfg.n_layer * H)
        self.decoder = nn.GRU(E + (Z if cfg.z_to_input else 0), H, num_layers=cfg.n_layer, batch_first=True,
                              dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(H, V)
        nn.init.normal_(self.wte.weight, std=0.1)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    # ---- encoder: sentence -> q(z|x) = N(mu, diag(exp(logvar))) ----

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T]`` token ids (padding past ``lengths`` ignored) -> ``mu, logvar`` ``[B, Z]``."""
        y, _ = self.encoder(self.drop(self.wte(x)))  # [B, T, H]
        # the state after each sentence's last real token (padding comes after it, so it never leaks in)
        last = (lengths.clamp(min=1) - 1).to(x.device)
        h = y[torch.arange(x.shape[0], device=x.device), last]
        return self.to_mu(h), self.to_logvar(h).clamp(-10.0, 10.0)

    # ---- decoder: p(x|z), teacher-forced for training, step by step for generation ----

    def initial_state(self, z: torch.Tensor) -> torch.Tensor:
        B = z.shape[0]
        h = torch.tanh(self.z_to_h(z))
        return h.view(B, self.config.n_layer, self.config.n_hidden).transpose(0, 1).contiguous()

    def _decode(self, inp: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.drop(self.wte(inp))
        if self.config.z_to_input:
            x = torch.cat([x, z[:, None, :].expand(-1, inp.shape[1], -1)], dim=-1)
        y, h = self.decoder(x, h)
        return self.lm_head(self.drop(y)), h

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Loss pieces for a batch of sentences.

        ``x`` ``[B, T]``: each row a sentence's tokens, then its end token, then padding (any id);
        ``lengths`` ``[B]``: tokens per row including the end token. Returns ``recon`` (summed
        cross-entropy over real tokens), ``kl`` (``[Z]``, KL per latent dimension summed over the
        batch), ``tokens`` (how many targets), ``mu`` ``[B, Z]``.
        """
        B, T = x.shape
        cfg = self.config
        if cfg.variational:
            mu, logvar = self.encode(x, lengths)
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) if sample \
                else torch.zeros_like(mu)
            z = mu + eps * torch.exp(0.5 * logvar)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(0)  # KL(q(z|x) || N(0, I)) per dim
        else:
            mu = torch.zeros(B, cfg.n_latent, device=x.device)
            z, kl = mu, torch.zeros(cfg.n_latent, device=x.device)
        # decoder input: BOS, then the sentence shifted right; targets: the sentence with its end token
        inp = torch.cat([torch.full((B, 1), self.bos_id, device=x.device, dtype=x.dtype), x[:, :-1]], dim=1)
        if self.training and cfg.word_dropout > 0:
            drop = torch.rand(inp.shape, device=x.device, generator=generator) < cfg.word_dropout
            drop[:, 0] = False  # keep BOS
            inp = inp.masked_fill(drop, self.mask_id)
        pad = torch.arange(T, device=x.device)[None, :] >= lengths[:, None]
        targets = x.masked_fill(pad, -1)
        logits, _ = self._decode(inp, z, self.initial_state(z))
        recon = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                ignore_index=-1, reduction="sum")
        return {"recon": recon, "kl": kl, "tokens": (~pad).sum(), "mu": mu}

    # ---- the step interface: step(token_ids, cache) -> (logits, cache) ----

    def new_cache(self, batch_size: int, max_len: int | None = None, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, z: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> VAEState:
        """A fresh decoder state. ``z`` defaults to a draw from the prior N(0, I) (torch's global RNG,
        or ``generator``), so seeding the engine seeds the latent too."""
        p = self.lm_head.weight
        device, dtype = device or p.device, dtype or p.dtype
        if z is None:
            if self.config.variational:
                z = torch.randn(batch_size, self.config.n_latent, generator=generator).to(device, dtype)
            else:
                z = torch.zeros(batch_size, self.config.n_latent, device=device, dtype=dtype)
        z = z.to(device, dtype)
        if z.shape[0] != batch_size:
            z = z.expand(batch_size, -1).contiguous()
        with torch.no_grad():
            return VAEState(self.initial_state(z), z)

    @torch.inference_mode()
    def step(self, token_ids: torch.Tensor, cache: VAEState | None = None) -> tuple[torch.Tensor, VAEState]:
        """Feed ``token_ids`` ``[B, T]``; return next-token logits ``[B, V]`` and the new state.

        On the first call the decoder's BOS is put in front of each row; a row's leading
        end-of-text token (the engine's start for an empty prompt) stands for BOS. Left-padded
        prompts (``cache.left_pad``) are run packed, so each row's state sees its real tokens only.
        """
        B, T = token_ids.shape
        if cache is None:
            cache = self.new_cache(B, device=token_ids.device)
        if cache.length > 0 and cache.n_pad is None:
            logits, h = self._decode(token_ids, cache.z, cache.h)
            last = logits[:, -1]
        else:  # the prefill: per-row BOS and padding
            n_pad = cache.n_pad.tolist() if cache.n_pad is not None else [0] * B
            rows = []
            for b in range(B):
                r = token_ids[b, n_pad[b]:]
                if cache.length == 0:
                    if len(r) and int(r[0]) == self.config.eos_id:
                        r = r[1:]
                    r = torch.cat([r.new_full((1,), self.bos_id), r])
                rows.append(r)
            lengths = torch.tensor([len(r) for r in rows])
            inp = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.config.eos_id)
            x = self.drop(self.wte(inp))
            if self.config.z_to_input:
                x = torch.cat([x, cache.z[:, None, :].expand(-1, inp.shape[1], -1)], dim=-1)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            y, h = self.decoder(packed, cache.h)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True)
            last = self.lm_head(y[torch.arange(B), (lengths - 1).to(y.device)])
        new = VAEState(h, cache.z)
        new.length = cache.length + T
        return last, new


# ---- the latent space: encode sentences, decode latents, interpolate, vary ----

@torch.no_grad()
def encode_texts(model: TextVAE, tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``mu, logvar`` ``[N, Z]`` of each text (cut to the model's ``block_size``)."""
    eos = model.config.eos_id
    rows = [tokenizer.encode(t)[: model.config.block_size - 1] + [eos] for t in texts]
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), eos, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
    lengths = torch.tensor([len(r) for r in rows])
    dev = model.lm_head.weight.device
    return model.encode(x.to(dev), lengths.to(dev))
