"""Ad creative kit: headline / description / call-to-action variants within each channel's limits.

Limits, required terms (the brand name) and banned claims are *decoding constraints*
(:func:`gencraft.generate.constraints.text_field`): the mask never lets the model write past a
channel's character limit, leave out a required term or spell a banned term, so nothing is
truncated or filtered afterwards. Candidates are ranked by three scores, all shown:

* ``likelihood`` -- the model's mean log-probability per token of the headline and description;
* ``voice`` -- closeness to the brand voice: the mean log-probability per token of the copy under
  a brand-voice model (a run trained on the brand's past copy) when one is given, else the
  character-trigram cosine similarity to the brief's voice examples;
* ``diversity`` -- maximal marginal relevance picks the ``n`` variants: each next pick maximises
  ``lambda * relevance - (1 - lambda) * max similarity to the picks so far``.

``CHANNELS`` is the built-in limit table; pass ``channels=`` (or ``--channels FILE.json``) to add
or override entries.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gencraft.apps._common import export, load_model, read_json_file
from gencraft.errors import UsageError
from gencraft.generate import constraints as C
from gencraft.generate.image import load_image_run, sample_images
from gencraft.guard import release, watermark_options
from gencraft.library import Library, preference_scores

# Hard limits in characters (the platforms' own published maxima).
CHANNELS: dict[str, dict[str, Any]] = {
    "search": {"headline": 30, "description": 90, "cta": 15, "layout": "google"},      # responsive search ad
    "display": {"headline": 30, "description": 90, "cta": 15, "layout": "google"},     # responsive display (short)
    "social": {"headline": 70, "description": 280, "cta": 20, "layout": "meta"},       # a post: <= 280
    "facebook": {"headline": 40, "description": 125, "cta": 20, "layout": "meta"},     # feed ad (primary text)
    "linkedin": {"headline": 70, "description": 150, "cta": 20, "layout": "linkedin"},  # sponsored content
    # a radio/podcast spot: the copy is spoken (apps/voiceover.py) as 15- and 30-second WAVs
    "audio": {"headline": 60, "description": 160, "cta": 25, "layout": "google"},
}

DEFAULT_BANNED = ("guaranteed", "guarantee", "best in the world", "world's best", "risk-free", "risk free",
                  "miracle", "100%", "#1", "number one", "cure", "no side effects")

DEFAULT_CTAS = ("Shop now", "Learn more", "Sign up", "Get started", "Try it today", "Book now", "Get offer",
                "Download", "Subscribe", "Contact us", "Order now", "See more")

# platform import layouts: our field -> the column header the platform expects
LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "google": [("Campaign", "campaign"), ("Ad group", "ad_group"), ("Headline 1", "headline"),
               ("Description 1", "description"), ("Call to action", "cta"), ("Final URL", "url")],
    "meta": [("Campaign Name", "campaign"), ("Ad Set Name", "ad_group"), ("Ad Name", "name"),
             ("Title", "headline"), ("Body", "description"), ("Call to Action", "cta"), ("Link", "url")],
    "linkedin": [("Campaign Name", "campaign"), ("Ad Name", "name"), ("Headline", "headline"),
                 ("Introductory Text", "description"), ("Call To Action", "cta"), ("Destination URL", "url")],
}


@dataclass
class Brief:
    """A product brief. ``required`` defaults to the product name; ``banned`` to common claims."""

    product: str
    features: list[str] = field(default_factory=list)
    audience: str = ""
    tone: str = ""
    channel: str = "search"
    required: list[str] | None = None
    banned: list[str] = field(default_factory=lambda: list(DEFAULT_BANNED))
    voice_examples: list[str] = field(default_factory=list)
    url: str = ""
    campaign: str = ""

    @classmethod
    def from_file(cls, path: str | Path) -> Brief:
        data = read_json_file(path, "brief")
        if not isinstance(data, dict) or not data.get("product"):
            raise UsageError(f"brief {path}: needs a JSON object with at least \"product\"", param="brief")
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(data) - known)
        if bad:
            raise UsageError(f"brief {path}: unknown field {bad[0]!r}; known: {', '.join(sorted(known))}",
                             param="brief")
        return cls(**data)

    def required_terms(self) -> list[str]:
        return [t for t in (self.required if self.required is not None else [self.product]) if t]


@dataclass
class Variant:
    """One ranked ad: copy plus the scores that placed it."""

    channel: str
    headline: str
    description: str
    cta: str
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def text(self) -> str:
        """The copy as one string: what the guard checks, the library stores and ratings rank by."""
        return f"{self.headline} {self.description} {self.cta}"


def channel_table(extra: dict[str, Any] | str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The built-in table updated with ``extra`` (a dict or a JSON file of channel -> limits)."""
    table = {k: dict(v) for k, v in CHANNELS.items()}
    if extra is None:
        return table
    data = extra if isinstance(extra, dict) else read_json_file(extra, "channels")
    if not isinstance(data, dict):
        raise UsageError("channels: expected a JSON object of channel -> {headline, description, cta}",
                         param="channels")
    for name, lim in data.items():
        if not isinstance(lim, dict):
            raise UsageError(f"channels.{name}: expected an object of limits", param="channels")
        merged = {**table.get(name, {"layout": "google"}), **lim}
        for f in ("headline", "description", "cta"):
            v = merged.get(f)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5000:
                raise UsageError(f"channels.{name}.{f}: expected a character limit 1..5000, got {v!r}",
                                 param="channels")
        if merged.get("layout") not in LAYOUTS:
            raise UsageError(f"channels.{name}.layout: use one of {', '.join(LAYOUTS)}", param="channels")
        table[name] = merged
    return table


def _prompt(brief: Brief, field_name: str) -> str:
    lines = [f"Product: {brief.product}"]
    if brief.features:
        lines.append("Features: " + "; ".join(brief.features))
    if brief.audience:
        lines.append(f"Audience: {brief.audience}")
    if brief.tone:
        lines.append(f"Tone: {brief.tone}")
    for ex in brief.voice_examples[:3]:
        lines.append(f"Example: {ex}")
    lines.append(f"{field_name.capitalize()}: ")
    return "\n".join(lines)


def _split_required(terms: list[str], limits: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Required terms go in the headline while they fit (with room to spare), else the description."""
    head, desc, used = [], [], 0
    for t in terms:
        if used + len(t) + 1 <= limits["headline"] * 2 // 3:
            head.append(t)
            used += len(t) + 1
        elif sum(len(x) + 1 for x in desc) + len(t) <= limits["description"] - 1:
            desc.append(t)
        else:
            raise UsageError(f"required term {t!r} does not fit the channel's limits "
                             f"(headline {limits['headline']}, description {limits['description']})",
                             param="required")
    return head, desc


def _word(term: str) -> str:
    """A required term as the constraint must see it: after a space when it starts with a letter or
    digit of a spaced script, so the model can never glue it to the word before ("thanLumen desk lamp");
    a space at the very start is stripped afterwards."""
    return " " + term if term[:1].isascii() and term[:1].isalnum() else term


def _trigrams(s: str) -> Counter[str]:
    s = f"  {s.lower()} "
    return Counter(s[i:i + 3] for i in range(len(s) - 2))


def similarity(a: str, b: str) -> float:
    """Cosine similarity of character-trigram counts (0..1)."""
    ca, cb = _trigrams(a), _trigrams(b)
    dot = sum(v * cb.get(k, 0) for k, v in ca.items())
    na, nb = math.sqrt(sum(v * v for v in ca.values())), math.sqrt(sum(v * v for v in cb.values()))
    return dot / (na * nb) if na and nb else 0.0


@torch.no_grad()
def text_logprob(model: Any, text: str) -> float:
    """Mean log-probability per token of ``text`` under ``model`` (a TextModel), teacher-forced."""
    tok, m = model.tokenizer, model.model
    ids = [int(tok.eos_id)] + list(tok.encode(text))
    limit = getattr(m, "max_context", None) or len(ids)
    ids = ids[-int(limit):]
    if len(ids) < 2:
        return 0.0
    dev = next(m.parameters()).device if hasattr(m, "parameters") else "cpu"
    cache = m.new_cache(1, max_len=len(ids))
    total = 0.0
    logits, cache = m.step(torch.tensor([ids[:1]], device=dev), cache)
    for t in ids[1:]:
        total += float(torch.log_softmax(logits.float(), -1)[0, t])
        logits, cache = m.step(torch.tensor([[t]], device=dev), cache)
    return total / (len(ids) - 1)


def _z(xs: list[float]) -> list[float]:
    if len(xs) < 2:
        return [0.0] * len(xs)
    mu = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs)) or 1.0
    return [(x - mu) / sd for x in xs]


def mmr(candidates: list[str], relevance: list[float], n: int, lam: float = 0.7) -> list[tuple[int, float]]:
    """Maximal marginal relevance: ``n`` indices with each pick's novelty (1 - max similarity)."""
    picked: list[tuple[int, float]] = []
    left = list(range(len(candidates)))
    while left and len(picked) < n:
        def gain(i: int) -> tuple[float, float]:
            sim = max((similarity(candidates[i], candidates[j]) for j, _ in picked), default=0.0)
            return lam * relevance[i] - (1 - lam) * sim * 3.0, 1.0 - sim
        best = max(left, key=lambda i: gain(i)[0])
        picked.append((best, gain(best)[1]))
        left.remove(best)
    return picked


def generate(model: Any, brief: Brief, *, n: int = 5, seed: int = 0, candidates: int | None = None,
             voice: Any = None, channels: Any = None, temperature: float = 1.0, top_p: float = 0.95,
             ctas: tuple[str, ...] | list[str] | None = None, diversity: float = 0.7,
             rank_by_ratings: bool = False, library: Any = None, watermark: Any = None) -> list[Variant]:
    """``n`` ranked ad variants for ``brief`` from ``model`` (TextModel, run or ``hf:PATH``).

    ``candidates`` (default ``3 n``) are sampled, scored and reduced to ``n`` by MMR. ``voice`` is a
    brand-voice model (TextModel or run). Every headline/description/CTA respects the channel's
    limits, contains the required terms and none of the banned ones -- by construction.
    ``rank_by_ratings``: then order them toward the ads rated up in ``library`` (default: the
    default library; see :func:`toward_liked`). ``watermark``: the text watermark to sample with
    (:meth:`gencraft.guard.ReleasePolicy.text_watermark`; None: unmarked).
    """
    table = channel_table(channels)
    if brief.channel not in table:
        raise UsageError(f"channel {brief.channel!r} is not one of {', '.join(table)}; add it with --channels",
                         param="channel")
    if n < 1:
        raise UsageError(f"n={n}: must be at least 1", param="n")
    limits = table[brief.channel]
    k = max(n, candidates or 3 * n)
    tm = load_model(model)
    voice_model = load_model(voice) if voice is not None else None
    banned = [b for b in brief.banned if b]
    low_required = [r.lower() for r in brief.required_terms()]
    for b in banned:
        if any(b.lower() in r for r in low_required):
            raise UsageError(f"banned term {b!r} is part of a required term", param="banned")
    head_req, desc_req = _split_required(brief.required_terms(), limits)
    g_head = C.text_field(max_chars=limits["headline"], min_chars=min(8, limits["headline"]),
                          required=[_word(t) for t in head_req], banned=banned)
    g_desc = C.text_field(max_chars=limits["description"], min_chars=min(20, limits["description"]),
                          required=[_word(t) for t in desc_req], banned=banned)
    options = [c for c in (ctas or DEFAULT_CTAS) if len(c) <= limits["cta"]
               and not any(b.lower() in c.lower() for b in banned)]
    if not options:
        raise UsageError(f"no call to action fits {limits['cta']} characters without a banned term; pass ctas=",
                         param="cta")
    g_cta = C.choice(options)
    opts = watermark_options(watermark, {"temperature": temperature, "top_p": top_p})
    heads = C.generate_many(tm, _prompt(brief, "headline"), g_head, n=k, seed=seed, **opts)
    descs = C.generate_many(tm, _prompt(brief, "description"), g_desc, n=k, seed=seed + 1, **opts)
    cta_out = C.generate_many(tm, _prompt(brief, "call to action"), g_cta, n=k, seed=seed + 2, **opts)
    texts = [f"{h.text} {d.text}" for h, d in zip(heads, descs, strict=True)]
    likelihood = [(h.logprob + d.logprob) / max(1, len(h.token_ids) + len(d.token_ids))
                  for h, d in zip(heads, descs, strict=True)]
    if voice_model is not None:
        voice_scores = [text_logprob(voice_model, t) for t in texts]
    elif brief.voice_examples:
        voice_scores = [max(similarity(t, ex) for ex in brief.voice_examples) for t in texts]
    else:
        voice_scores = [0.0] * len(texts)
    relevance = [a + b for a, b in zip(_z(likelihood), _z(voice_scores), strict=True)]
    picked = mmr(texts, relevance, n, lam=diversity)
    out = []
    for i, novelty in picked:
        v = Variant(brief.channel, heads[i].text.strip(), descs[i].text.strip(), cta_out[i].text, {
            "likelihood": round(likelihood[i], 4), "voice": round(voice_scores[i], 4),
            "diversity": round(novelty, 4), "rank_score": round(relevance[i], 4)})
        check_variant(v, brief, limits)
        out.append(v)
    return toward_liked(out, library) if rank_by_ratings else out


def toward_liked(variants: list[Variant], library: Any = None) -> list[Variant]:
    """``variants`` reordered toward the ad copy rated up (and away from that rated down) in the
    library (:func:`gencraft.library.preference_scores`, shown as the ``preference`` score); the
    kit's order breaks ties and stays as it is when nothing is rated. A library that cannot be read
    is a warning, never a failure: ranking by ratings is a refinement."""
    try:
        lib = library if library is not None else Library.open()
        try:
            liked, disliked = lib.rated_texts("ads")
        finally:
            if library is None:
                lib.close()
    except Exception as e:  # noqa: BLE001 - see the docstring
        warnings.warn(f"not ranked by your ratings ({' '.join(str(e).split()) or type(e).__name__})",
                      UserWarning, stacklevel=2)
        return variants
    if not (liked or disliked):
        return variants
    pref = preference_scores([v.text for v in variants], liked, disliked)
    for v, p in zip(variants, pref, strict=True):
        v.scores["preference"] = round(p, 4)
    order = sorted(range(len(variants)), key=lambda i: -pref[i])  # stable: ties keep the kit's order
    return [variants[i] for i in order]


def check_variant(v: Variant, brief: Brief, limits: dict[str, Any]) -> None:
    """Re-check a variant (limits, required and banned terms); a failure is a bug, never trimmed."""
    for f in ("headline", "description", "cta"):
        if len(getattr(v, f)) > limits[f]:
            raise AssertionError(f"{f} exceeds {limits[f]} characters: {getattr(v, f)!r}")
    copy = v.text.lower()
    for b in brief.banned:
        if b and re.search(r"\s*".join(re.escape(w) for w in b.lower().split()) or re.escape(b.lower()), copy):
            raise AssertionError(f"banned term {b!r} in {copy!r}")
    for r in brief.required_terms():
        if r not in f"{v.headline} {v.description}":
            raise AssertionError(f"required term {r!r} missing")


def validation(v: Variant, brief: Brief, limits: dict[str, Any]) -> dict[str, Any]:
    """What the library stores beside a variant: its lengths against the channel's limits, the
    required terms, and the verdict of :func:`check_variant` (``valid``, and the ``problem`` if any)."""
    checks: dict[str, Any] = {f: f"{len(getattr(v, f))}/{limits[f]}" for f in ("headline", "description", "cta")}
    checks.update(required=brief.required_terms(), valid=True)
    try:
        check_variant(v, brief, limits)
    except AssertionError as e:
        checks.update(valid=False, problem=str(e))
    return checks


def release_variants(variants: list[Variant], brief: Brief, *, policy: Any, model: Any = None,
                     model_name: str | None = None, parameters: dict[str, Any] | None = None, seed: int = 0,
                     channels: Any = None, watermark: Any = None, api_key: str | None = None) -> list[Any]:
    """Release each variant on its own (:func:`gencraft.guard.release` under ``policy``, label ``ads``),
    its rank and scores in the parameters and its :func:`validation` stored beside the guard's verdict:
    what ``gencraft ads``, the server's ads route and the ``kits.ads`` job do. Returns the
    :class:`~gencraft.guard.Released` outputs, in rank order."""
    limits = channel_table(channels)[brief.channel]
    return [release(v.text, kind="text", label="ads", policy=policy, model=model, model_name=model_name,
                    params={**(parameters or {}), "rank": rank, "scores": dict(v.scores)}, seed=seed,
                    prompt=brief.product, watermark=watermark, checks={"validation": validation(v, brief, limits)},
                    api_key=api_key)
            for rank, v in enumerate(variants)]


def export_csv(variants: list[Variant], path: str | Path, brief: Brief, *, channels: Any = None,
               model: Any = None, seed: int | None = None, policy: Any = None, watermark: Any = None) -> Path:
    """CSV in the column layout the channel's ad platform imports (Google Ads, Meta, LinkedIn),
    plus the scores; released (guard check, provenance manifest beside it)."""
    table = channel_table(channels)
    layout = LAYOUTS[table[brief.channel]["layout"]]
    rows = []
    for i, v in enumerate(variants):
        values = {"campaign": brief.campaign or brief.product, "ad_group": f"{brief.product} - {brief.channel}",
                  "name": f"{brief.product} variant {i + 1}", "headline": v.headline, "description": v.description,
                  "cta": v.cta, "url": brief.url}
        row = {col: values[key] for col, key in layout}
        row.update({f"Score {k}": val for k, val in v.scores.items()})
        rows.append(row)
    cols = [c for c, _ in layout] + [f"Score {k}" for k in (variants[0].scores if variants else {})]
    return export(rows, path, columns=cols, model=model, kind="ads.copy", seed=seed, policy=policy,
                  watermark=watermark,
                  parameters={"channel": brief.channel, "product": brief.product, "n": len(variants)})


# ---------------------------------------------------------------- ad images

SIZES = {"landscape": (1200, 628), "square": (1080, 1080)}


def find_font(size: int) -> Any:
    """A scalable font: DejaVu/Liberation/Noto from the system, else Pillow's built-in one."""
    from PIL import ImageFont

    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "LiberationSans-Bold.ttf", "NotoSans-Bold.ttf",
                 "Arial.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = word
    if cur:
        lines.append(cur)
    return lines


def fit_text(draw: Any, text: str, box: tuple[int, int], *, max_size: int = 96, min_size: int = 10
             ) -> tuple[Any, list[str]]:
    """The largest font size (and line breaks) at which ``text`` fits ``box`` (w, h)."""
    lo, hi, best = min_size, max_size, None
    while lo <= hi:
        mid = (lo + hi) // 2
        font = find_font(mid)
        lines = _wrap(draw, text, font, box[0])
        widest = max((draw.textlength(ln, font=font) for ln in lines), default=0)
        height = len(lines) * int(mid * 1.25)
        if widest <= box[0] and height <= box[1]:
            best, lo = (font, lines), mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise UsageError(f"headline {text!r} does not fit a {box[0]}x{box[1]} box even at {min_size}px",
                         param="image")
    return best


def compose_image(background: Any, headline: str, cta: str = "", *, size: tuple[int, int] = (1200, 628)) -> Any:
    """An ad image: ``background`` (PIL image) cover-fitted to ``size``, a band with the headline
    fitted to it, and the call to action in a button. Returns a PIL RGB image."""
    from PIL import Image, ImageDraw

    W, H = size
    bg = background.convert("RGB")
    scale = max(W / bg.width, H / bg.height)
    bg = bg.resize((max(W, round(bg.width * scale)), max(H, round(bg.height * scale))), Image.Resampling.LANCZOS)
    left, top = (bg.width - W) // 2, (bg.height - H) // 2
    img = bg.crop((left, top, left + W, top + H))
    band_h = H // 3
    overlay = Image.new("RGBA", (W, band_h), (0, 0, 0, 170))
    img.paste(overlay, (0, H - band_h), overlay)
    draw = ImageDraw.Draw(img)
    pad = W // 24
    text_w = W - 2 * pad - (W // 4 if cta else 0)
    font, lines = fit_text(draw, headline, (text_w, band_h - 2 * pad))
    y = H - band_h + pad
    for ln in lines:
        draw.text((pad, y), ln, font=font, fill=(255, 255, 255))
        y += int(font.size * 1.25)
    if cta:
        bw, bh = W // 4 - pad, band_h // 3
        bx, by = W - pad - bw, H - band_h + (band_h - bh) // 2
        draw.rounded_rectangle((bx, by, bx + bw, by + bh), radius=bh // 4, fill=(255, 196, 0))
        cfont, clines = fit_text(draw, cta, (bw - 16, bh - 8), max_size=48)
        tw = max(draw.textlength(ln, font=cfont) for ln in clines)
        draw.text((bx + (bw - tw) / 2, by + (bh - len(clines) * cfont.size * 1.25) / 2), "\n".join(clines),
                  font=cfont, fill=(0, 0, 0))
    return img


def ad_images(image_run: Any, variants: list[Variant], *, seed: int = 0, sizes: tuple[str, ...] = ("landscape", "square")
              ) -> list[tuple[Any, dict[str, Any]]]:
    """One image per variant and size from an image run's samples; each with its parameters
    (the image run's provenance goes into the manifest the caller writes)."""
    from PIL import Image

    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise UsageError(f"image size {bad[0]!r}: use {', '.join(SIZES)}", param="sizes")
    run = load_image_run(image_run)
    samples = sample_images(run, n=len(variants), seed=seed)
    out = []
    for i, (v, arr) in enumerate(zip(variants, samples, strict=True)):
        bg = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        for s in sizes:
            img = compose_image(bg, v.headline, v.cta, size=SIZES[s])
            out.append((img, {"variant": i, "size": s, "image_run": str(run.path),
                              "image_run_id": run.info.get("run_id"), "image_seed": seed, "sample": i}))
    return out
