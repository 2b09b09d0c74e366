"""Responsible generation: moderation, copy checks, watermarks, signed provenance and licenses.

Every output of every modality leaves gencraft through one step, :func:`release`
(:mod:`.release`), under one :class:`ReleasePolicy`::

    from gencraft import guard

    with guard.ReleasePolicy(store=True) as policy:            # keys loaded here, once
        wm = policy.text_watermark(tm.tokenizer.vocab_size)     # None when off or without keys
        result = tm.generate(prompt, **guard.watermark_options(wm))
        rel = guard.release(result.text, kind="text", label="completion", policy=policy, model=tm,
                            params={...}, seed=seed, prompt=prompt, watermark=wm, out="out.txt")
        rel.text, rel.manifest, rel.report, rel.item_id                # out.txt + out.txt.manifest.json

        rel = guard.release(pil_image, kind="image", label="image", policy=policy, model=image_run,
                            params={...}, seed=seed, out="out.png")   # watermarked, iTXt manifest + C2PA

``release`` raises :class:`~gencraft.errors.GuardError` when the policy refuses the output. The
pieces live in :mod:`.moderation`, :mod:`.copies`, :mod:`.watermark`, :mod:`.keys`,
:mod:`.provenance`, :mod:`.licenses` and :mod:`.memorization`.
"""

from __future__ import annotations

from typing import Any

from gencraft.guard.copies import CopyIndex, CopyReport, build_copy_index, build_run_index, load_run_index
from gencraft.guard.keys import Keys, init_keys, load_keys
from gencraft.guard.licenses import check_licenses
from gencraft.guard.moderation import ModerationReport, Policy, moderate
from gencraft.guard.provenance import Verification
from gencraft.guard.release import (
    MEDIA,
    UNSIGNED_NOTICE,
    GuardReport,
    Media,
    Released,
    ReleasePolicy,
    media_for_file,
    release,
    verify_file,
)
from gencraft.guard.tournament import TournamentWatermark, draws, watermark_in
from gencraft.guard.watermark import (
    TextWatermark,
    WatermarkProcessor,
    derive_key,
    detect_image,
    detect_text,
    embed_image,
    text_detector,
)


def watermark_options(watermark: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generation options (``GenerationConfig`` fields) with ``watermark`` in its place: the tournament
    in the sampling core's ``sampler`` slot (it replaces the random draw), the green list as a logits
    processor ahead of the caller's processors."""
    options = dict(options or {})
    if isinstance(watermark, TournamentWatermark):
        options["sampler"] = watermark
    elif watermark is not None:
        options["processors"] = [watermark, *(options.get("processors") or [])]
    return options


__all__ = [
    "MEDIA", "UNSIGNED_NOTICE", "CopyIndex", "CopyReport", "GuardReport", "Keys", "Media", "ModerationReport",
    "Policy", "Released", "ReleasePolicy", "TextWatermark", "TournamentWatermark", "Verification", "WatermarkProcessor",
    "build_copy_index", "build_run_index", "check_licenses", "derive_key", "draws", "detect_image", "detect_text",
    "embed_image", "init_keys", "load_keys", "load_run_index", "media_for_file", "moderate", "release",
    "text_detector", "verify_file", "watermark_in", "watermark_options",
]
