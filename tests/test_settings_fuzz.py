"""Every setting of every family, fuzzed (hypothesis): a value either trains/generates or is a
GencraftError that names the setting — never another exception, never a half-written run.

- Every field of every config dataclass (the model families of ``models.FAMILIES``, ``TrainConfig``,
  the text VAE's ``KLConfig``, ``ImageTrainConfig``) through both doors a value comes in by:
  ``--set key=value`` (strings, :func:`gencraft.config.apply_overrides`) and a config read back from a
  file (JSON values, :func:`gencraft.config.from_dict`).
- Whole tiny trainings of every family with one field drawn at random (within its range, at its
  edges, or out of it): it trains, or the error names that field.
- Every generation option (:class:`GenerationConfig`) through ``from_options``, then a real generation
  on a tiny model when it is accepted.

``make test`` draws a few examples per field; ``pytest -m slow tests/test_settings_fuzz.py`` many.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gencraft.config import Range, apply_overrides, from_dict
from gencraft.errors import GencraftError
from gencraft.generate import GenerationConfig
from gencraft.models import FAMILIES
from gencraft.train.config import TrainConfig
from gencraft.train.image import ImageTrainConfig
from gencraft.train.text_vae import KLConfig

FAST = int(os.environ.get("GENCRAFT_FUZZ_EXAMPLES", "6"))
CONFIGS = [FAMILIES[k].config for k in FAMILIES] + [TrainConfig, KLConfig, ImageTrainConfig]
FIELDS = [(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls)]

HOSTILE = [float("nan"), float("inf"), float("-inf"), -1, 0, 1, -(2**63), 2**63, 10**30, 1e-30, 0.5, True, "x", "",
           None, [], {}, "nan", "1e999"]


def _base_type(tp):
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def values_for(cls, name: str) -> st.SearchStrategy:
    """Hostile values, values at and just past the field's limits, and values of its own type."""
    tp = _base_type(typing.get_type_hints(cls)[name])
    lim = getattr(cls, "LIMITS", {}).get(name)
    own: st.SearchStrategy
    if tp is bool:
        own = st.booleans()
    elif tp is int:
        own = st.integers(min_value=-(2**40), max_value=2**40)
    elif tp is float:
        own = st.floats(allow_nan=True, allow_infinity=True)
    elif isinstance(lim, tuple):
        own = st.sampled_from(lim)
    else:
        own = st.text(max_size=12)
    edges: list = []
    if isinstance(lim, Range):
        for b in (lim.lo, lim.hi):
            if b is not None:
                edges += [b, b - 1 if tp is int else b - 1e-9, b + 1 if tp is int else b + 1e-9]
    elif isinstance(lim, tuple):
        edges = [*lim, lim[0].upper(), lim[0] + " "]
    return st.one_of(st.sampled_from(HOSTILE + edges), own)


def names_the_field(err: GencraftError, name: str) -> bool:
    return err.param == name or name in str(err)


@pytest.mark.parametrize("cls, name", FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FIELDS])
@settings(max_examples=FAST, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_field_through_both_doors(cls, name: str, data) -> None:
    value = data.draw(values_for(cls, name))
    base = cls()
    # --set key=value: the value as the user typed it
    try:
        (cfg,) = apply_overrides([base], {name: str(value)})
        assert getattr(cfg, name) is None or getattr(cfg, name) == getattr(cfg, name)  # NaN never passes
    except GencraftError as e:
        assert names_the_field(e, name), str(e)
    # a config read back from a file: JSON values of any type
    try:
        cfg = from_dict(cls, {**dataclasses.asdict(base), name: value}, where="f.json: field model")
    except GencraftError as e:
        assert names_the_field(e, name) and "f.json" in str(e), str(e)
    else:
        v = getattr(cfg, name)
        assert not (isinstance(v, float) and not math.isfinite(v)), f"{name}={v!r} accepted"


# ---------------------------------------------------------------- whole trainings


TINY_TEXT = {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_hidden": 16, "n_latent": 4, "block_size": 16,
             "batch_size": 4, "max_iters": 2, "eval_interval": 1000, "eval_iters": 1, "num_threads": 1,
             "log_interval": 1, "warmup_iters": 1, "checkpoint_every": 0}
TINY_IMAGE = {"steps": 2, "batch_size": 4, "eval_every": 1000, "sample_every": 1000, "log_every": 1, "z_dim": 8,
              "ch": 4, "g_ch": 4, "d_ch": 4, "max_ch": 8, "w_dim": 8, "n_mlp": 1, "emb_dim": 4}
TRAINING_FIELDS = {kind: [f.name for f in dataclasses.fields(FAMILIES[kind].config)]
                   + [f.name for f in dataclasses.fields(ImageTrainConfig if fam.modality == "image" else TrainConfig)]
                   + ([f.name for f in dataclasses.fields(KLConfig)] if kind == "text_vae" else [])
                   for kind, fam in FAMILIES.items()}
SKIP = {"device", "compile", "vocab_size", "img_size", "channels", "n_classes", "eos_id"}  # set by the data, or slow


def field_value(cls_list, name: str, data) -> object:
    cls = next(c for c in cls_list if name in {f.name for f in dataclasses.fields(c)})
    tp = _base_type(typing.get_type_hints(cls)[name])
    small = st.integers(0, 8) if tp is int else st.floats(0, 2) if tp is float else st.none()
    return data.draw(st.one_of(values_for(cls, name), small.filter(lambda v: v is not None)))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from test_robust import corpus

    from gencraft.data import prepare
    from gencraft.data.images import prepare_images

    d = tmp_path_factory.mktemp("fuzz-data")
    (d / "c.txt").write_text("\n".join(corpus(80)), encoding="utf-8")
    return {"text": prepare([d / "c.txt"], d / "text", license="CC0-1.0", unit="line"),
            "image": Path(prepare_images("sklearn:digits", size=8, out=str(d / "digits"))["path"])}


# hf trains only from a base (--from hf:PATH, fine-tuning): test_personal trains it
@pytest.mark.parametrize("kind", [k for k in FAMILIES if k != "hf"])
@settings(max_examples=max(FAST // 2, 2), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_training_with_any_one_setting(kind: str, data, datasets, tmp_path_factory) -> None:
    from gencraft.train.image import train_image
    from gencraft.train.loop import train

    fam = FAMILIES[kind]
    name = data.draw(st.sampled_from([n for n in TRAINING_FIELDS[kind] if n not in SKIP]))
    classes = [fam.config, ImageTrainConfig if fam.modality == "image" else TrainConfig, KLConfig]
    value = field_value(classes, name, data)
    base = TINY_IMAGE if fam.modality == "image" else TINY_TEXT
    known = set(TRAINING_FIELDS[kind])
    pairs = [f"{k}={v}" for k, v in base.items() if k in known and k != name] + [f"{name}={value}"]
    out = tmp_path_factory.mktemp("run") / "r"
    try:
        if fam.modality == "image":
            train_image(datasets["image"], kind, out=out, preset="tiny", overrides=pairs)
        else:
            train(datasets["text"], model=kind, preset="tiny", out=out, overrides=pairs, progress=False)
    except GencraftError as e:
        assert names_the_field(e, name) or e.param in known, f"{name}={value!r}: {e}"
        if os.environ.get("GENCRAFT_FUZZ_LOG"):
            print(f"\n{kind} {name}={value!r}: {e}")
    else:
        assert (out / "gencraft.json").is_file()
        if os.environ.get("GENCRAFT_FUZZ_LOG"):
            print(f"\n{kind} {name}={value!r}: trained")


# ---------------------------------------------------------------- generation options


GEN_FIELDS = [f.name for f in dataclasses.fields(GenerationConfig) if f.name != "processors"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    from test_server import make_text_run

    from gencraft.backends import load

    return load(str(make_text_run(tmp_path_factory.mktemp("gen"), "tiny", block_size=32, n_embd=16, n_layer=1)))


@pytest.mark.parametrize("name", GEN_FIELDS)
@settings(max_examples=FAST, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_generation_option(name: str, data, tiny_model) -> None:
    value = data.draw(st.one_of(st.sampled_from(HOSTILE + [2, 3, 16, 100, 10**6, ["a"], {"1": 2.0}, {1: 5.0}]),
                                st.integers(-5, 64), st.floats(-3, 3)))
    try:
        cfg = GenerationConfig.from_options(**{name: value})
    except GencraftError as e:
        assert names_the_field(e, name), f"{name}={value!r}: {e}"
        return
    cfg = GenerationConfig.from_options(cfg, max_new_tokens=min(cfg.max_new_tokens, 8))
    try:
        tiny_model.generate("the ", cfg)
    except GencraftError as e:
        assert names_the_field(e, name), f"{name}={value!r}: {e}"
