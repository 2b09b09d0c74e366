"""FID-proxy: measuring generated images with a feature network gencraft trains itself.

No Inception weights can be downloaded, so quality is measured in the feature space of a small
CNN classifier trained on the *same dataset's* training split (on its class labels; on an
unlabelled dataset, on predicting which of four rotations was applied — a self-supervised task).
Every figure therefore only compares runs on the same dataset; it is **not** comparable with
published FID numbers. Each figure comes with its *real-data floor*: the same metric between two
disjoint parts of the real data (a train-split sample vs the held-out split, the same sizes), i.e.
what a perfect generator would score with this many samples.

Metrics, all on the feature net's penultimate layer:

* ``fid``: Fréchet distance between Gaussians fitted to the two feature sets.
* ``kid``: kernel inception distance, the unbiased MMD² with the cubic polynomial kernel.
* ``precision``/``recall`` (Kynkäänniemi et al., 2019): a sample is "precise" when it falls inside
  the k-NN ball of some real feature; a real image is "recalled" when it falls inside the k-NN
  ball of some generated one. Low recall = mode collapse.
* ``cond_acc``: how often the classifier recognises the class a conditional sample was asked for.
* ``nn_dist``: per sample, the RMS pixel distance (0-1 scale) to the nearest training image — the
  copy check; the floor is the same distance for held-out real images.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from gencraft.data.images import ImageDataset, load_image_dataset, split_indices
from gencraft.errors import DataError, UsageError
from gencraft.io import atomic_path, write_json
from gencraft.models.image_common import to_uint8, to_unit
from gencraft.runs import load_model

FEATURE_NET_FILE = "feature_net.safetensors"


@dataclass
class FeatureNetConfig:
    channels: int = 1
    n_out: int = 10  # classes, or 4 rotations (self-supervised)
    task: str = "labels"  # "labels" or "rotation"
    ch: int = 32
    feat_dim: int = 64
    epochs: int = 12
    seed: int = 0


class FeatureNet(nn.Module):
    """conv -> conv/2 -> conv/2 -> global average pool -> 64-d features -> class logits."""

    def __init__(self, cfg: FeatureNetConfig) -> None:
        super().__init__()
        c = cfg.ch
        self.body = nn.Sequential(
            nn.Conv2d(cfg.channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU(),
        )
        self.feat = nn.Linear(4 * c, cfg.feat_dim)
        self.head = nn.Linear(cfg.feat_dim, cfg.n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.feat(self.body(x).mean(dim=[2, 3])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.randint(0, 4, (x.shape[0],))
    out = torch.stack([torch.rot90(img, int(r), dims=[1, 2]) for img, r in zip(x, k, strict=True)])
    return out, k


def train_feature_net(images: np.ndarray, labels: np.ndarray, n_classes: int, *, seed: int = 0,
                      epochs: int = 12) -> FeatureNet:
    """Train the classifier on uint8 images [N, H, W, C] (labels, or rotations when ``n_classes`` < 2)."""
    task = "labels" if n_classes >= 2 else "rotation"
    cfg = FeatureNetConfig(channels=int(images.shape[3]), n_out=n_classes if task == "labels" else 4,
                           task=task, epochs=epochs, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = FeatureNet(cfg)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        x_all = to_unit(torch.from_numpy(images))
        y_all = torch.from_numpy(labels)
        n = len(x_all)
        bs = 64
        steps = max(1, epochs * math.ceil(n / bs))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        net.train()
        for _ in range(steps):
            idx = torch.randint(0, n, (min(bs, n),), generator=g)
            x, y = x_all[idx], y_all[idx]
            # small random shifts: features should not hinge on exact pixel positions
            x = torch.roll(x, shifts=(int(torch.randint(-1, 2, (), generator=g)), int(torch.randint(-1, 2, (), generator=g))), dims=(2, 3))
            if task == "rotation":
                x, y = _rotations(x)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    net.cfg = cfg  # type: ignore[attr-defined]
    return net


@torch.no_grad()
def features_and_logits(net: FeatureNet, images_u8: np.ndarray | torch.Tensor, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features [N, D] and logits [N, K] (float64 numpy) of uint8 images [N, H, W, C]."""
    x = torch.as_tensor(images_u8)
    feats, logits = [], []
    for i in range(0, len(x), batch):
        xb = to_unit(x[i:i + batch])
        f = net.features(xb)
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()


def load_or_train_feature_net(ds: ImageDataset, val_fraction: float = 0.2, seed: int = 0) -> FeatureNet:
    """The dataset's feature net, cached as ``feature_net.safetensors`` beside it (trained on the train split)."""
    tr, _ = split_indices(len(ds.images), val_fraction, seed)
    key = {"digest": ds.manifest.get("digest"), "val_fraction": val_fraction, "seed": seed, "version": 1}
    path = ds.path / FEATURE_NET_FILE
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if json.loads(meta.get("key", "{}")) == key:
                cfg = FeatureNetConfig(**json.loads(meta["config"]))
                net = FeatureNet(cfg)
                net.load_state_dict(load_file(str(path)))
                net.cfg = cfg  # type: ignore[attr-defined]
                return net.eval()
        except Exception:  # a stale or damaged cache is simply retrained
            pass
    net = train_feature_net(ds.images[tr], ds.labels[tr], ds.n_classes, seed=seed)
    try:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
                      metadata={"key": json.dumps(key), "config": json.dumps(asdict(net.cfg))})  # type: ignore[arg-type]
    except OSError:
        pass  # a read-only dataset folder: keep it in memory only
    return net


# ---- the metrics -----------------------------------------------------------------------------

def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½) between Gaussians fitted to feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ra = _sqrtm_psd(sa)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ sb @ ra), 0, None)).sum()  # Tr (S_a S_b)^½
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross)


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with k(x, y) = (x·y / d + 1)³ (the KID estimator, one subset)."""
    d = a.shape[1]
    kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d, 0, None))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN balls."""
    def radii(x: np.ndarray) -> np.ndarray:
        d = _pairwise(x, x)
        return np.sort(d, axis=1)[:, min(k, len(x) - 1)]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    d = _pairwise(fake, real)  # [F, R]
    precision = float((d <= r_real[None, :]).any(axis=1).mean())
    recall = float((d.T <= r_fake[None, :]).any(axis=1).mean())
    return precision, recall


def nearest_distance(samples_u8: np.ndarray, train_u8: np.ndarray, batch: int = 256) -> np.ndarray:
    """Per sample, the RMS pixel distance (0-1 scale) to its nearest training image."""
    t = torch.from_numpy(train_u8).reshape(len(train_u8), -1).float() / 255
    out = []
    for i in range(0, len(samples_u8), batch):
        s = torch.as_tensor(samples_u8[i:i + batch]).reshape(-1, t.shape[1]).float() / 255
        out.append(torch.cdist(s, t).min(dim=1).values / math.sqrt(t.shape[1]))
    return torch.cat(out).numpy()


@dataclass
class Evaluator:
    """Everything needed to score samples of one dataset: the feature net and the real references."""

    net: FeatureNet
    heldout: np.ndarray  # uint8 images
    heldout_feats: np.ndarray
    train: np.ndarray
    train_labels: np.ndarray
    n_classes: int
    floor: dict[str, float]

    @classmethod
    def for_dataset(cls, ds: ImageDataset, val_fraction: float = 0.2, seed: int = 0) -> Evaluator:
        tr, va = split_indices(len(ds.images), val_fraction, seed)
        if len(va) < 4:

            raise DataError(f"{ds.path}: {len(ds.images)} images are too few to measure (need at least 20)")
        with torch.random.fork_rng():  # building or loading the net must not move the caller's RNG
            net = load_or_train_feature_net(ds, val_fraction, seed)
        heldout, heldout_labels = ds.images[va], ds.labels[va]
        hf, hl = features_and_logits(net, heldout)
        ev = cls(net, heldout, hf, ds.images[tr], ds.labels[tr], ds.n_classes, {})
        # the real-data floor: a train-split sample of the same size against the held-out split
        rng = np.random.default_rng(seed + 1)
        ref = rng.choice(len(tr), size=min(len(va), len(tr)), replace=False)
        floor = ev.score(ds.images[tr][ref], None, nn=False)
        if ds.n_classes:
            floor["cond_acc"] = float((hl.argmax(1) == heldout_labels).mean())
        nd = nearest_distance(heldout, ds.images[tr])
        floor["nn_dist_mean"], floor["nn_dist_min"] = float(nd.mean()), float(nd.min())
        ev.floor = floor
        return ev

    def score(self, samples_u8: np.ndarray, labels: np.ndarray | None, nn: bool = True) -> dict[str, float]:
        """All metrics for uint8 samples [N, H, W, C] (``labels``: the classes they were asked for)."""
        f, logits = features_and_logits(self.net, samples_u8)
        p, r = precision_recall(self.heldout_feats, f)
        out = {"fid": frechet_distance(f, self.heldout_feats), "kid": kernel_distance(f, self.heldout_feats),
               "precision": p, "recall": r}
        if labels is not None and self.n_classes:
            out["cond_acc"] = float((logits.argmax(1) == labels).mean())
        if nn:
            nd = nearest_distance(samples_u8, self.train)
            out["nn_dist_mean"], out["nn_dist_min"] = float(nd.mean()), float(nd.min())
        return out

    @property
    def n_samples(self) -> int:
        return len(self.heldout)


def sample_for_eval(model: Any, n: int, n_classes: int, seed: int = 1234, batch: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` uint8 samples from ``model.sample`` (balanced labels when conditional) with a fixed seed."""
    g = torch.Generator().manual_seed(seed)  # latents are drawn on the CPU: the same images on any device
    labels = np.arange(n) % n_classes if n_classes else None
    dev = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for i in range(0, n, batch):
            m = min(batch, n - i)
            y = torch.from_numpy(labels[i:i + m]).to(dev) if labels is not None else None
            out.append(to_uint8(model.sample(m, y, generator=g)).cpu())
    model.train(was_training)
    return torch.cat(out).numpy(), labels


def write_eval(path: Path, result: dict[str, Any]) -> None:
    write_json(path, result)


def evaluate_run(run: str | Path, n: int | None = None, seed: int = 1234) -> dict[str, Any]:
    """All FID-proxy metrics for an image run beside the real-data floor (what ``evaluate-image`` prints).

    ``n`` samples (default: as many as the held-out split) are drawn from the run's selected
    checkpoint; the result also lists each sample's nearest-training-image distance.
    """
    model, info, path = load_model(run, modality="image", usage="give a vae, dcgan or stylegan run")
    ds_path = info.get("data", {}).get("dataset")
    if not ds_path:
        raise UsageError(f"{path / 'gencraft.json'}: no data.dataset; cannot find the dataset to measure against",
                         param="run")
    ds = load_image_dataset(ds_path)
    if ds.manifest.get("digest") != info.get("data", {}).get("manifest_digest"):
        raise UsageError(f"{ds.path}: this dataset changed since {path} was trained on it; prepare it again "
                         "with the same options to evaluate", param="run")
    val_fraction = float(info.get("train", {}).get("val_fraction", 0.2))
    ev = Evaluator.for_dataset(ds, val_fraction, 0)
    if n is not None and n < 4:
        raise UsageError(f"--n {n}: expected at least 4 samples", param="n")
    n = n or ev.n_samples
    samples, labels = sample_for_eval(model, n, int(model.cfg.n_classes), seed=seed)
    scores = ev.score(samples, labels)
    nd = nearest_distance(samples, ev.train)
    return {"run": str(path), "kind": info["kind"], "n_samples": n, "n_reference": ev.n_samples,
            "feature_task": ev.net.cfg.task, "model": scores, "floor": ev.floor,  # type: ignore[attr-defined]
            "fid_ratio": scores["fid"] / ev.floor["fid"] if ev.floor.get("fid") else None,
            "nn_dist_per_sample": [round(float(v), 5) for v in nd]}
