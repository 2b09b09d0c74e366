"""Responsible generation: moderation, copy checks, watermarks, signed provenance and licenses.

What a generator calls (the generate CLI, the kits, the server)::

    from gencraft import guard

    wm = guard.text_watermark(tokenizer.vocab_size)          # None when no keys or watermark=False
    result = tm.generate(prompt, processors=[wm] if wm else [])
    text, report, manifest = guard.finalize_text(
        result.text, run_info=tm.info, params={...}, seed=seed,
        copy_index=guard.load_run_index(run) if want_copies else None,
        watermarked=wm is not None)
    guard.write_text_artifact("out.txt", text, manifest)    # + out.txt.manifest.json

    image, report, manifest = guard.finalize_image(pil_image, run_info=info, params={...}, seed=seed)
    guard.write_image_artifact("out.png", image, manifest)  # iTXt manifest + C2PA

``finalize_*`` raise :class:`~gencraft.errors.GuardError` when the policy blocks the output. The
pieces live in :mod:`.moderation`, :mod:`.copies`, :mod:`.watermark`, :mod:`.keys`,
:mod:`.provenance` and :mod:`.memorization`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from gencraft.errors import GuardError
from gencraft.guard.copies import CopyIndex, CopyReport, build_copy_index, build_run_index, load_run_index
from gencraft.guard.keys import Keys, init_keys, load_keys
from gencraft.guard.moderation import ModerationReport, Policy, moderate
from gencraft.guard.provenance import (
    Verification,
    build_manifest,
    image_sha256,
    sign_manifest,
    text_sha256,
    verify_file,
    write_image_artifact,
    write_text_artifact,
)
from gencraft.guard.watermark import (
    TextWatermark,
    WatermarkProcessor,
    derive_key,
    detect_image,
    detect_text,
    embed_image,
)

GAMMA = 0.25
DELTA = 2.0
CONTEXT_WIDTH = 1


@dataclass
class GuardReport:
    """Everything the guard found about one output; ``to_dict`` goes into the manifest."""

    action: str  # strongest moderation action ("allow", "flag", "mask", "block")
    moderation: ModerationReport | None = None
    prompt_moderation: ModerationReport | None = None
    copies: CopyReport | None = None
    watermark: dict | None = None
    license_warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def mod(r: ModerationReport | None) -> dict | None:
            if r is None:
                return None
            return {"action": r.action, "categories": r.categories,
                    "hits": [{"category": h.category, "start": h.start, "end": h.end, "source": h.source}
                             for h in r.hits], "classifier": r.classifier}

        copies = None
        if self.copies is not None:
            c = self.copies
            copies = {"copy_risk": c.copy_risk, "longest_chars": c.longest_chars,
                      "longest_tokens": c.longest_tokens, "char_ngram_fraction": round(c.char_ngram_fraction, 4),
                      "token_ngram_fraction": None if c.token_ngram_fraction is None
                      else round(c.token_ngram_fraction, 4), "sources": c.sources}
        return {"action": self.action, "moderation": mod(self.moderation),
                "prompt_moderation": mod(self.prompt_moderation), "copies": copies,
                "license_warnings": self.license_warnings}


def watermark_params(keys: Keys) -> dict[str, Any]:
    """The manifest's ``watermark`` block for text: the key id and the rule's parameters (never the key)."""
    return {"key_id": keys.key_id, "scheme": "green-list", "gamma": GAMMA, "delta": DELTA,
            "context_width": CONTEXT_WIDTH}


def text_watermark(vocab_size: int, *, keys: Keys | None = None, enabled: bool = True,
                   gamma: float = GAMMA, delta: float = DELTA) -> WatermarkProcessor | None:
    """The watermark logits processor for this machine's key, or ``None`` when there is no key or
    ``enabled`` is False (``--no-watermark``). Add it to ``GenerationConfig.processors``."""
    if not enabled:
        return None
    keys = keys or load_keys()
    if keys is None:
        return None
    return WatermarkProcessor(derive_key(keys.watermark_secret, "text"), vocab_size, gamma=gamma, delta=delta,
                              context_width=CONTEXT_WIDTH)


def text_detector(vocab_size: int, keys: Keys | None = None, *, gamma: float = GAMMA,
                  context_width: int = CONTEXT_WIDTH) -> TextWatermark:
    """The green-list rule for detection with this machine's key (raises when there are no keys)."""
    keys = keys or load_keys(required=True)
    return TextWatermark(derive_key(keys.watermark_secret, "text"), vocab_size, gamma=gamma,
                         context_width=context_width)


_warned_runs: set[str] = set()


def check_licenses(info: dict[str, Any] | None, *, strict: bool = False) -> list[str]:
    """Sources whose license is ``unknown`` in a run's gencraft.json or a dataset manifest.

    Warns once per run (``UserWarning``) and returns the paths; ``strict`` raises
    :class:`GuardError` instead (``--strict-licenses``).
    """
    info = info or {}
    sources = (info.get("data") or {}).get("sources") if "data" in info else info.get("sources")
    unknown = [str(s.get("path")) for s in sources or [] if str(s.get("license", "unknown")).lower() in
               ("", "unknown", "none")]
    if not unknown:
        return []
    names = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    if strict:
        raise GuardError(f"training source license unknown: {names}; set licenses with `gencraft data prepare "
                         "--license` or drop --strict-licenses", param="strict_licenses")
    key = str(info.get("run_id") or info.get("digest") or id(info))
    if key not in _warned_runs:
        _warned_runs.add(key)
        warnings.warn(f"training data of this model has sources with unknown license: {names}; "
                      "check you may use what it generates", UserWarning, stacklevel=2)
    return unknown


def finalize_text(text: str, *, run_info: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                  seed: int | None = None, policy: Policy | None = None, prompt: str | None = None,
                  copy_index: CopyIndex | None = None, copy_action: str = "flag", watermarked: bool = False,
                  strict_licenses: bool = False, keys: Keys | None = None,
                  kind: str = "text") -> tuple[str, GuardReport, dict[str, Any]]:
    """Moderate, copy-check and sign one generated text.

    Returns ``(text_out, report, manifest)``: ``text_out`` is the text with masked spans starred
    (policy ``mask``); the manifest is signed when keys exist. ``watermarked`` says whether the
    caller generated with :func:`text_watermark` (the manifest records the key id, or null).
    Raises :class:`GuardError` when moderation blocks the text or the prompt, when ``copy_action``
    is ``"block"`` and the text is a copy risk, or on unknown licenses with ``strict_licenses``.
    """
    from gencraft.guard.copies import enforce

    keys = keys or load_keys()
    lic = check_licenses(run_info, strict=strict_licenses)
    prompt_report = moderate(prompt, policy) if prompt else None
    if prompt_report is not None and prompt_report.blocked:
        raise GuardError(f"prompt blocked by the moderation policy ({', '.join(prompt_report.categories)}); "
                         "change the prompt or the policy", param="prompt")
    report = moderate(text, policy)
    if report.blocked:
        raise GuardError(f"output blocked by the moderation policy ({', '.join(report.categories)}); "
                         "regenerate or change the policy", param="moderation")
    out = report.masked_text
    copies = copy_index.check(text) if copy_index is not None else None
    if copies is not None:
        enforce(copies, copy_action)
    wm = watermark_params(keys) if (watermarked and keys is not None) else None
    g = GuardReport(report.action, report, prompt_report, copies, wm, lic)
    manifest = build_manifest(content_sha256=text_sha256(out), kind=kind, run_info=run_info, parameters=params,
                              seed=seed, guard=g.to_dict(), media_type="text/plain")
    manifest["watermark"] = wm
    if keys is not None:
        manifest = sign_manifest(manifest, keys)
    return out, g, manifest


def generate_guarded(tm, prompt: str, *, copy_index: CopyIndex | None = None, policy: Policy | None = None,
                     watermark: bool = True, retries: int = 2, seed: int | None = None,
                     strict_licenses: bool = False, **options: Any) -> tuple[str, GuardReport, dict[str, Any]]:
    """Generate one text with ``tm`` (a ``gencraft.backends.TextModel``) and finalize it; regenerate
    (next seed) up to ``retries`` times when the output is a copy risk or blocked by moderation.

    ``options`` are ``GenerationConfig`` fields. Returns what :func:`finalize_text` returns; raises
    :class:`GuardError` when every attempt fails (the last reason in the message).
    """
    if retries < 0:
        raise GuardError("retries must be >= 0", param="retries")
    wm = text_watermark(tm.tokenizer.vocab_size, enabled=watermark)
    processors = list(options.pop("processors", []) or []) + ([wm] if wm is not None else [])
    last: GuardError | None = None
    for attempt in range(retries + 1):
        s = None if seed is None else seed + attempt
        result = tm.generate(prompt, seed=s, processors=processors, **options)
        params = {k: v for k, v in options.items() if isinstance(v, str | int | float | bool | type(None))}
        try:
            return finalize_text(result.text, run_info=tm.info, params={**params, "attempt": attempt}, seed=s,
                                 policy=policy, prompt=prompt, copy_index=copy_index, copy_action="block",
                                 watermarked=wm is not None, strict_licenses=strict_licenses)
        except GuardError as e:
            if e.param == "prompt" or e.param == "strict_licenses":
                raise
            last = e
    raise GuardError(f"no acceptable output in {retries + 1} attempts; last: {last}", param="retries")


def finalize_image(image, *, run_info: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                   seed: int | None = None, watermark: bool = True, strict_licenses: bool = False,
                   keys: Keys | None = None, kind: str = "image"):
    """Watermark (when keys exist and ``watermark``) and sign one generated PIL image.

    Returns ``(image_out, report, manifest)``; write it with :func:`write_image_artifact`.
    """
    keys = keys or load_keys()
    lic = check_licenses(run_info, strict=strict_licenses)
    wm = None
    if watermark and keys is not None and min(image.size) >= 32:  # smaller images stay unmarked
        image = embed_image(image, derive_key(keys.watermark_secret, "image"))
        wm = {"key_id": keys.key_id, "scheme": "dct-spread-spectrum", "bits": 32}
    g = GuardReport("allow", watermark=wm, license_warnings=lic)
    manifest = build_manifest(content_sha256=image_sha256(image), kind=kind, run_info=run_info,
                              parameters=params, seed=seed, guard=g.to_dict(), media_type="image/png")
    manifest["watermark"] = wm
    if keys is not None:
        manifest = sign_manifest(manifest, keys)
    return image, g, manifest


__all__ = [
    "CopyIndex", "CopyReport", "GuardReport", "Keys", "ModerationReport", "Policy", "TextWatermark",
    "Verification", "WatermarkProcessor", "build_copy_index", "build_run_index", "check_licenses",
    "detect_image", "detect_text", "finalize_image", "finalize_text", "generate_guarded", "init_keys", "load_keys",
    "load_run_index", "moderate", "text_detector", "text_watermark", "verify_file", "write_image_artifact",
    "write_text_artifact",
]
