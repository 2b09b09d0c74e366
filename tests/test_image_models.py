"""Image models and their training loop: learning, shapes, resume, labels, truncation, divergence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gencraft.data.images import prepare_images
from gencraft.errors import TrainingDiverged
from gencraft.models.dcgan import DCGAN, DCGANConfig
from gencraft.models.image_common import diff_augment
from gencraft.models.stylegan import StyleGAN, StyleGANConfig
from gencraft.models.vae import VAE, VAEConfig, discretized_logistic_logp
from gencraft.paths import run_path
from gencraft.train.image import train_image

KINDS = ["vae", "dcgan", "stylegan"]


@pytest.fixture
def toy(tmp_path):
    """A trivially separable labelled set: 'dark' blobs on black vs 'bright' squares on white, 8x8."""
    rng = np.random.default_rng(0)
    for i in range(24):
        dark = np.clip(rng.normal(30, 10, (8, 8)), 0, 255).astype(np.uint8)
        bright = np.clip(rng.normal(225, 10, (8, 8)), 0, 255).astype(np.uint8)
        for name, arr in (("dark", dark), ("bright", bright)):
            (tmp_path / "toy" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr, "L").save(tmp_path / "toy" / name / f"{i}.png")
    prepare_images(tmp_path / "toy", size=8, out="toy")
    return "toy"


def _losses(run: str, key: str) -> list[float]:
    lines = (run_path(run) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)[key] for x in lines if json.loads(x)["split"] == "train"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_model_learns_and_samples(kind, toy):
    info = train_image(toy, kind, out=f"r-{kind}", preset="tiny", steps=60, seed=0,
                       overrides=["eval_every=60", "log_every=1", "batch_size=16", "diffaug=off"])
    key = "loss" if kind == "vae" else "loss_d"
    losses = _losses(f"r-{kind}", key)
    if kind == "vae":
        assert np.mean(losses[-10:]) < 0.7 * losses[0]  # the negative ELBO falls
    else:
        assert np.mean(losses[-10:]) < losses[0]  # D learns to tell real from fake...
    # ...and the samples moved towards the data: nearer the training images than the untrained model's
    from gencraft.data.images import load_image_dataset
    from gencraft.generate.image import load_image_run
    from gencraft.train.image import build_image_model, model_module
    from gencraft.train.image_eval import Evaluator, sample_for_eval

    ev = Evaluator.for_dataset(load_image_dataset(toy))
    cfg_cls = model_module(kind)[0]
    torch.manual_seed(0)
    untrained = build_image_model(kind, cfg_cls(**info["model"]))
    before = ev.score(*sample_for_eval(untrained, 32, 2))["nn_dist_mean"]
    after = ev.score(*sample_for_eval(load_image_run(f"r-{kind}").model, 32, 2))["nn_dist_mean"]
    assert after < 0.75 * before, (before, after)
    run = run_path(f"r-{kind}")
    for f in ("gencraft.json", "model.safetensors", "metrics.jsonl", "MODEL_CARD.md", "data_manifest.json",
              "checkpoints/last/model.safetensors", "checkpoints/last/optimizer.safetensors", "checkpoints/last/state.json"):
        assert (run / f).is_file(), f
    assert info["kind"] == kind and info["model"]["n_classes"] == 2
    from gencraft.generate.image import load_image_run, sample_images

    r = load_image_run(f"r-{kind}")
    imgs = sample_images(r, 6, seed=1)
    assert imgs.shape == (6, 8, 8, 1) and imgs.dtype == np.uint8
    x = r.model.sample(3, torch.tensor([0, 1, 0]))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    assert np.array_equal(imgs, sample_images(r, 6, seed=1))  # same seed, same pixels


def test_conditional_generation_obeys_labels(toy):
    """On a trivially separable set, asking for 'bright' gives bright images and 'dark' dark ones."""
    from gencraft.generate.image import label_index, load_image_run, sample_images

    for kind in ("dcgan", "vae"):
        train_image(toy, kind, out=f"c-{kind}", preset="tiny", steps=150, seed=0,
                    overrides=["eval_every=150", "batch_size=16", "diffaug=off"])
        r = load_image_run(f"c-{kind}")
        bright = sample_images(r, 16, seed=3, label=label_index(r, "bright")).astype(float).mean(axis=(1, 2, 3))
        dark = sample_images(r, 16, seed=3, label=label_index(r, "dark")).astype(float).mean(axis=(1, 2, 3))
        assert bright.min() > dark.max() + 20, (kind, bright, dark)  # every 'bright' sample beats every 'dark' one


def test_resume_continues_exactly(toy):
    common = dict(preset="tiny", seed=5, overrides=["eval_every=8", "log_every=4", "batch_size=8"])
    train_image(toy, "dcgan", out="straight", steps=16, **common)
    train_image(toy, "dcgan", out="split", steps=8, **common)
    assert json.loads((run_path("split") / "checkpoints/last/state.json").read_text())["step"] == 8
    train_image(toy, "dcgan", out="split", steps=16, resume=True, **common)
    a = load_file(str(run_path("straight") / "checkpoints/last/model.safetensors"))
    b = load_file(str(run_path("split") / "checkpoints/last/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_divergence_stops_and_keeps_last_good_checkpoint(toy):
    train_image(toy, "vae", out="dv", preset="tiny", steps=6, overrides=["eval_every=6", "batch_size=8"])
    before = (run_path("dv") / "checkpoints/last/model.safetensors").read_bytes()
    with pytest.raises(TrainingDiverged, match="step 7.*last good checkpoint \\(step 6\\)"):
        train_image(toy, "vae", out="dv", steps=20, resume=True, overrides=["diverge_at=0.001"])
    assert (run_path("dv") / "checkpoints/last/model.safetensors").read_bytes() == before
    assert json.loads((run_path("dv") / "checkpoints/last/state.json").read_text())["step"] == 6


def test_cli_train_errors_leave_nothing(cli, toy, gencraft_home):
    r = cli("train-image", toy, "--model", "gan", "--out", "x")
    assert r.code == 2 and "--model" in r.err and "Traceback" not in r.err
    r = cli("train-image", toy, "--model", "dcgan", "--out", "x", "--set", "nope=1")
    assert r.code == 2 and "nope" in r.err
    prepare_images("sklearn:digits", size=12, out="d12")
    r = cli("train-image", "d12", "--model", "stylegan", "--out", "x", "--steps", "2")
    assert r.code == 2 and "size 12" in r.err and r.err.strip().count("\n") == 0
    assert not (gencraft_home / "runs" / "x").exists()


def test_stylegan_truncation_zero_gives_mean_style():
    torch.manual_seed(0)
    for n_classes in (0, 3):
        m = StyleGAN(StyleGANConfig(img_size=8, n_classes=n_classes, z_dim=8, w_dim=8, n_mlp=2, ch=8, d_ch=8, max_ch=16))
        g = m.G_ema
        y = torch.tensor([0, 1, 2, 1]) if n_classes else None
        for _ in range(20):  # let the running average of w move away from zero
            g.ws(torch.randn(16, 8), torch.randint(0, 3, (16,)) if n_classes else None, update_avg=True)
        ws = g.ws(torch.randn(4, 8), y, truncation=0.0)
        expect = g.mapping.w_avg[y] if n_classes else g.mapping.w_avg[0].expand(4, -1)
        assert torch.allclose(ws, expect.unsqueeze(1).expand_as(ws))
        assert g.mapping.w_avg.abs().sum() > 0
        imgs = m.sample(4, y, truncation=0.0)
        if n_classes:
            assert torch.allclose(imgs[1], imgs[3])  # same class, same mean style
        else:
            assert torch.allclose(imgs[0], imgs[3])
        assert not torch.allclose(m.sample(4, y, truncation=1.0)[1], m.sample(4, y, truncation=1.0)[3])


def test_stylegan_style_mixing_and_noise():
    torch.manual_seed(0)
    m = StyleGAN(StyleGANConfig(img_size=16, z_dim=8, w_dim=8, n_mlp=2, ch=8, d_ch=8, max_ch=16))
    assert m.G.num_ws == 6
    za, zb = torch.randn(1, 8), torch.randn(1, 8)
    mixed = m.mix(za, zb, cutoff=0)  # every layer from zb
    assert torch.allclose(mixed, m.sample(1, z=zb), atol=1e-5)
    with torch.no_grad():
        for layer in m.G_ema.synthesis.layers:
            layer.noise_strength.fill_(1.0)
    a = m.G_ema(za, noise_mode="random")
    b = m.G_ema(za, noise_mode="random")
    assert not torch.allclose(a, b)  # per-layer noise changes details
    assert torch.allclose(m.G_ema(za, noise_mode="const"), m.G_ema(za, noise_mode="const"))


def test_vae_likelihoods_and_elbo_units():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    x = torch.round((x + 1) * 127.5) / 127.5 - 1  # on the 256-level grid
    # a sharp logistic at the right value puts nearly all mass in the right bin
    lp = discretized_logistic_logp(x, x, torch.full_like(x, -7.0))
    assert (lp > -0.05).all()
    # a wide logistic spreads it: probabilities over all 256 bins sum to 1
    levels = torch.arange(256).float() / 127.5 - 1
    p = discretized_logistic_logp(levels, torch.zeros(256), torch.zeros(256)).exp().sum()
    assert abs(p.item() - 1.0) < 1e-4
    for lik in ("logistic", "bernoulli"):
        m = VAE(VAEConfig(img_size=8, z_dim=4, ch=8, likelihood=lik, beta=0.5))
        loss, st = m.loss(x)
        assert st["bpd"] == pytest.approx(st["nelbo"] / (64 * np.log(2)))
        assert st["nelbo"] == pytest.approx(st["recon"] + st["kl"], rel=1e-5)
        assert loss.item() == pytest.approx(st["recon"] + 0.5 * st["kl"], rel=1e-4)
        assert m.reconstruct(x).shape == x.shape


def test_vae_class_prior_kl_and_sampling():
    """With ``class_prior`` the KL term is against N(mu_y, sigma_y) and samples come from that prior."""
    torch.manual_seed(0)
    m = VAE(VAEConfig(img_size=8, z_dim=4, ch=8, n_classes=2, class_prior=True))
    with torch.no_grad():
        m.prior.weight.copy_(torch.randn(2, 8))
    x, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 0, 1, 1, 0])
    mu, logvar = m.encode(x, y)
    pmu, plogvar = m.prior_params(y, 6, x.device)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(pmu, (0.5 * plogvar).exp())
    _, st = m.loss(x, y)
    assert st["kl"] == pytest.approx(torch.distributions.kl_divergence(q, p).sum(1).mean().item(), rel=1e-4)
    assert not torch.allclose(pmu[0], pmu[1])  # one prior per class
    yy = torch.tensor([0, 1])
    assert torch.allclose(m.sample(2, yy, truncation=0.0), m.params_to_image(m.decode_params(pmu[:2], yy)))
    m.loss(x, y)[0].backward()
    assert m.prior.weight.grad.abs().sum() > 0  # the prior is learned through the KL term


def test_dcgan_losses_and_ema():
    m = DCGAN(DCGANConfig(img_size=8, z_dim=4, g_ch=4, d_ch=4, loss="ns"))
    from gencraft.models.dcgan import d_loss, g_loss

    big = torch.full((3,), 10.0)
    assert d_loss("hinge", big, -big).item() == 0.0 and d_loss("ns", big, -big).item() < 1e-3
    assert g_loss("ns", big).item() < 1e-3 and g_loss("hinge", big).item() == -10.0
    assert all(not p.requires_grad for p in m.G_ema.parameters())


def test_diff_augment_is_differentiable_and_varies():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not torch.allclose(diff_augment(x), diff_augment(x))
    t = diff_augment(x.detach(), "translation")  # translation only moves pixels (zeros fill the edge)
    assert set(torch.unique(t).tolist()) <= set(torch.unique(x.detach()).tolist()) | {0.0}

