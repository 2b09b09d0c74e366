"""The one release step: every output of every modality leaves gencraft through :func:`release`.

A generator (the ``generate`` command, the kits, the server's endpoints, ``imagine``,
``compose``, speech) makes its content, then hands it to ``release`` once, with the
:class:`ReleasePolicy` of the command or server. ``release`` applies, in this order:

1. the license rule (unknown licenses warn once per run; ``strict_licenses`` refuses);
2. moderation of the prompt and, for text, of the output (``block`` raises
   :class:`~gencraft.errors.GuardError`, ``mask`` stars spans);
3. for text, the copy check against the run's training data (``copy_action="block"`` raises);
4. the watermark: images (and any medium whose table entry can embed one) are marked here;
   text is marked while it is sampled (:meth:`ReleasePolicy.text_watermark` gives the sampler
   or processor the generator must use), and ``release`` records which;
5. the provenance manifest, signed when the policy has keys; without keys it says so, visibly
   and in the log: ``unsigned: no keys (run `gencraft keys init`)``;
6. the carrier: the file at ``out`` (text + ``.manifest.json`` sidecar or front matter, PNG with
   an iTXt manifest and C2PA, other media + sidecar) and the bytes the server returns;
7. library storage (``store``), blocked outputs included with the guard's verdict.

Content made while it is released (speech of any length: a :class:`~gencraft.guard.audio.AudioStream`)
goes through the same steps; its media entry's ``stream`` marks, writes and hashes it chunk by chunk
after step 2, so the text is moderated before anything is spoken and memory holds one chunk.

What differs between modalities -- how content is hashed, watermarked, written and detected --
is one :class:`Media` entry in :data:`MEDIA`; a new modality adds an entry, not guard code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gencraft import audio
from gencraft.backends import load_tokenizer_of
from gencraft.errors import GencraftError, GuardError, UsageError
from gencraft.guard.audio import SCHEME as AUDIO_SCHEME
from gencraft.guard.audio import (
    audio_sha256,
    detect_audio,
    detect_audio_file,
    embed_audio,
    is_audio_file,
    wav_samples,
    write_stream,
)
from gencraft.guard.copies import CopyIndex, CopyReport, enforce, load_run_index
from gencraft.guard.keys import Keys, load_keys
from gencraft.guard.licenses import check_licenses
from gencraft.guard.moderation import ModerationReport, Policy, moderate
from gencraft.guard.provenance import (
    Verification,
    build_manifest,
    embed_c2pa,
    front_matter_block,
    image_sha256,
    png_bytes_with_manifest,
    read_text_artifact,
    sidecar_path,
    sign_manifest,
    text_sha256,
    verify_path,
)
from gencraft.guard.tournament import GRID_SCHEME, LAYERS, GridWatermark, detect_grid, watermark_in
from gencraft.guard.watermark import (
    SCHEMES,
    derive_key,
    detect_image,
    detect_with,
    embed_image,
    text_watermark,
)
from gencraft.io import atomic_path, write_bytes, write_json
from gencraft.music.events import encode
from gencraft.music.midi import read_midi
from gencraft.paths import home
from gencraft.post.image import gif_bytes

log = logging.getLogger("gencraft.guard")

MAX_STORED_BYTES = 64 << 20  # a streamed output larger than this is stored in the library as its manifest only

UNSIGNED_NOTICE = "unsigned: no keys (run `gencraft keys init`)"
AUDIO_CLAIM_P = 1e-4  # an audio mark is claimed when the written file reads p below this (detection: 1e-3)


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


# --- the media table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """How the guard handles one modality. Everything else in :func:`release` is shared.

    ``digest(content)`` is the manifest's ``content_sha256``; ``encode(content, manifest, keys)``
    the file's bytes (the manifest inside them, or not when it travels in a ``sidecar``);
    ``embed(content, keys)`` marks finished content and returns it with the manifest's
    ``watermark`` block (``None`` when this content cannot carry one); ``detect(path, data, keys,
    run)`` reads a mark back for ``gencraft guard watermark detect`` (``{"detected", "line", ...}``;
    ``run``: the run whose tokenizer re-tokenizes token-level media); ``moderated`` media are moderated
    and copy-checked as text; ``store_as`` names the library column ("text" or "image" bytes).
    ``file_digest(data)``: ``content_sha256`` from a sidecar medium's file bytes, for ``verify``
    (default: the bytes' SHA-256). ``stream(content, keys, path)``: for content made while it is
    released (any content but ``bytes``), mark it with ``keys`` (``None``: unmarked), write it to
    ``path`` and return ``(content_sha256, watermark block)``.
    """

    kind: str
    media_type: str
    digest: Callable[[Any], str]
    encode: Callable[[Any, dict | None, Keys | None], bytes]
    sidecar: bool = True
    embed: Callable[[Any, Keys], tuple[Any, dict | None]] | None = None
    detect: Callable[[Path, bytes, Keys, str | None], dict] | None = None
    moderated: bool = False
    store_as: str = "image"
    file_digest: Callable[[bytes], str] | None = None
    stream: Callable[[Any, Keys | None, Path], tuple[str, dict | None]] | None = None


def _bytes_sha256(data: Any) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


def _image_watermark(image: Any, keys: Keys) -> tuple[Any, dict | None]:
    if min(image.size) < 32:  # too small to carry the mark: the manifest says none
        return image, None
    return (embed_image(image, derive_key(keys.watermark_secret, "image")),
            {"key_id": keys.key_id, "scheme": "dct-spread-spectrum", "bits": 32})


def _png(image: Any, manifest: dict | None, keys: Keys | None) -> bytes:
    data = png_bytes_with_manifest(image, manifest or {})
    if keys is not None and manifest is not None and "signature" in manifest:
        data = embed_c2pa(data, manifest, keys)
    return data


def _detect_image_bytes(path: Path, data: bytes, keys: Keys, run: str | None) -> dict:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"not a readable image ({e})", param="file") from None
    result = detect_image(image, derive_key(keys.watermark_secret, "image")).to_dict()
    result.pop("bits")
    result["line"] = f"bit accuracy {result['bit_accuracy']:.3f} (p = {result['p_value']:.2g})"
    return result


def _gif_frames_watermark(frames: list[Any], keys: Keys) -> tuple[list[Any], dict | None]:
    """Every frame marked at three times the margin: a GIF's 256-colour palette quantizes part of it
    away (64-pixel noise frames: 0.72 of the bits read at 1x, 0.97 at 2x, 1.00 at 3x; PSNR 32.5 ->
    31.6 dB; interpolation frames of the test's DCGAN read 0.75-0.97 at 2x depending on the palette)."""
    if not frames or min(frames[0].size) < 32:
        return frames, None
    key = derive_key(keys.watermark_secret, "image")
    return ([embed_image(f, key, strength=3.0) for f in frames],
            {"key_id": keys.key_id, "scheme": "dct-spread-spectrum", "bits": 32, "strength": 3.0})


def _gif(frames: list[Any], manifest: dict | None, keys: Keys | None) -> bytes:
    return gif_bytes(frames)


def _wav_sha256(data: bytes) -> str:
    """The samples' hash (:func:`gencraft.guard.audio.audio_sha256`), so WAV headers and chunks may change."""
    try:
        samples, rate = wav_samples(bytes(data))
    except ValueError as e:
        raise UsageError(f"audio content: {e}", param="content") from None
    return audio_sha256(samples, rate)


def _audio_watermark(data: bytes, keys: Keys) -> tuple[bytes, dict | None]:
    """The spectral mark, claimed only when :func:`~gencraft.guard.audio.detect_audio` finds it in the
    file as written (16-bit samples); audio that carries none (too short, silent) is written as it came
    and its manifest says no watermark."""
    samples, rate = wav_samples(bytes(data))
    if rate != audio.SAMPLE_RATE:  # the spectral mark is laid out for the speech rate: say none
        return data, None
    key = derive_key(keys.watermark_secret, "audio")
    x = samples.astype(np.float32) / 32768.0
    marked = audio.wav_bytes(embed_audio(x, key), rate)
    written, _ = wav_samples(marked)
    if detect_audio(written.astype(np.float32) / 32768.0, key).p_value <= AUDIO_CLAIM_P:
        return marked, {"key_id": keys.key_id, **AUDIO_SCHEME}
    return data, None


def _audio_stream(stream: Any, keys: Keys | None, path: Path) -> tuple[str, dict | None]:
    key = derive_key(keys.watermark_secret, "audio") if keys is not None else None
    digest = write_stream(stream, key, path)
    return digest, ({"key_id": keys.key_id, **AUDIO_SCHEME} if keys is not None else None)


def _detect_audio_bytes(path: Path, data: bytes, keys: Keys, run: str | None) -> dict:
    scheme = (_sidecar_manifest(path) or {}).get("watermark")
    result, line = detect_audio_file(path, derive_key(keys.watermark_secret, "audio"),
                                     scheme if isinstance(scheme, dict) else None)
    return {**result, "line": line}


def _text_encode(text: str, manifest: dict | None, keys: Keys | None) -> bytes:
    return text.encode("utf-8")


def find_run(manifest: dict | None) -> str | None:
    """The run under ``GENCRAFT_HOME/runs`` whose ``run_id`` is the manifest's (``None`` if none)."""
    import json

    rid = (manifest or {}).get("run_id")
    if not rid:
        return None
    for info in sorted((home() / "runs").glob("*/gencraft.json")):
        try:
            if json.loads(info.read_text(encoding="utf-8")).get("run_id") == rid:
                return str(info.parent)
        except (OSError, ValueError):
            continue
    return None


def _run_tokenizer(path: Path, manifest: dict | None, run: str | None) -> Any:
    spec = run or find_run(manifest)
    if spec is None:
        raise UsageError(f"cannot tell which run's tokenizer produced {path}; pass --run RUN", param="run")
    return load_tokenizer_of(spec)


def grids_of(text: str) -> list[list[str]]:
    """The tile grids in a released map file: blocks of rows split by blank lines, or the ``map``
    rows of a JSON or JSON-lines report (``game map --out maps.json``)."""
    import json

    try:
        records = json.loads(text)
    except ValueError:
        try:  # JSON lines
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            records = None
    if records and isinstance(records, list) and all(isinstance(r, dict) and isinstance(r.get("map"), list) for r in records):
        blocks = [[str(row) for row in r["map"]] for r in records]
    else:
        blocks = [b.splitlines() for b in text.replace("\r\n", "\n").split("\n\n")]
    grids = []
    for rows in blocks:
        rows = [r for r in rows if r.strip()]
        if rows:
            width = max(len(r) for r in rows)
            grids.append([list(r.ljust(width)) for r in rows])
    return grids


def _detect_grid(text: str, keys: Keys, block: dict, alpha: float = 1e-4) -> dict:
    wm = GridWatermark(derive_key(keys.watermark_secret, "map"), layers=int(block.get("layers", LAYERS)))
    t = detect_grid(grids_of(text), wm.rule)
    return {"scheme": block["scheme"], **t.to_dict(), "detected": t.p_value <= alpha, "alpha": alpha,
            "line": f"z = {t.z:.2f}, p = {t.p_value:.2g} ({t.scored} tiles scored)"}


def _detect_text_file(path: Path, data: bytes, keys: Keys, run: str | None) -> dict:
    text, manifest = read_text_artifact(path)
    block = (manifest or {}).get("watermark") or {}
    if block.get("scheme") == GRID_SCHEME:  # a game map: tiles drawn by the grid tournament, no tokenizer
        return _detect_grid(text, keys, block)
    tok = _run_tokenizer(path, manifest, run)
    return detect_with(list(tok.encode(text)), tok.vocab_size, keys, (manifest or {}).get("watermark"))


def _sidecar_manifest(path: Path) -> dict | None:
    """The manifest beside ``path`` (``None`` when there is none or it is not a JSON object)."""
    import json

    side = sidecar_path(path)
    try:
        manifest = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None
    except (ValueError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _detect_midi_file(path: Path, data: bytes, keys: Keys, run: str | None) -> dict:
    manifest = _sidecar_manifest(path)
    tok = _run_tokenizer(path, manifest, run)
    events = encode(read_midi(path))
    return detect_with([tok.vocab[e] for e in events if e in tok.vocab], tok.vocab_size, keys,
                       (manifest or {}).get("watermark"))


MEDIA: dict[str, Media] = {
    "text": Media("text", "text/plain", text_sha256, _text_encode, detect=_detect_text_file, moderated=True,
                  store_as="text"),
    "image": Media("image", "image/png", image_sha256, _png, sidecar=False, embed=_image_watermark,
                   detect=_detect_image_bytes),
    "animation": Media("animation", "image/gif", lambda frames: _bytes_sha256(_gif(frames, None, None)), _gif,
                       embed=_gif_frames_watermark, detect=_detect_image_bytes),
    "audio": Media("audio", "audio/wav", _wav_sha256, lambda data, m, k: bytes(data), embed=_audio_watermark,
                   detect=_detect_audio_bytes, file_digest=_wav_sha256, stream=_audio_stream),
    "midi": Media("midi", "audio/midi", _bytes_sha256, lambda data, m, k: bytes(data), detect=_detect_midi_file),
}


def media_for_file(path: str | os.PathLike[str], data: bytes | None = None) -> Media:
    """The table entry of a generated file: by its signature (PNG, GIF), else by the ``media_type`` its
    sidecar manifest names, else text."""
    p = Path(path)
    data = p.read_bytes() if data is None else data
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"\xff\xd8":
        return MEDIA["image"]
    if data[:4] == b"GIF8":
        return MEDIA["animation"]
    if is_audio_file(data):
        return MEDIA["audio"]
    if data[:4] == b"MThd":
        return MEDIA["midi"]
    media_type = (_sidecar_manifest(p) or {}).get("media_type")
    for m in MEDIA.values():
        if media_type is not None and m.media_type == media_type:
            return m
    return MEDIA["text"]


def verify_file(path: str | os.PathLike[str]) -> Verification:
    """``valid`` / ``tampered`` / ``unsigned`` for any file gencraft made: a PNG's manifest inside it,
    text's in front matter or its sidecar, other media's in the sidecar, checked against the hash of
    the file by its media entry (``file_digest``: a WAV's samples, a MIDI's bytes)."""
    p = Path(path)
    digest = None
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(16)
        digest = media_for_file(p, head).file_digest
    return verify_path(p, file_digest=digest or _bytes_sha256)


# --- the policy ----------------------------------------------------------------------------------


@dataclass
class ReleasePolicy:
    """What :func:`release` does to every output of one command, API call or server.

    ``keys``: the signing and watermark keys, loaded once, here (``"home"``, the default: from
    ``GENCRAFT_HOME/keys``; or a :class:`Keys`, or ``None`` for none). Without keys outputs are
    neither signed nor watermarked, and the first release says so (:data:`UNSIGNED_NOTICE`).
    ``library``: where ``store`` keeps outputs -- anything with ``add(**fields)`` (a
    :class:`gencraft.library.Library`), or a callable that opens one on first use (``Library.open``;
    closed by :meth:`close`). The guard sits below the library, so the caller names it
    (``apps.release_policy`` passes the default library); without one nothing is stored (logged once).
    """

    moderation: Policy | None = None
    copy_check: bool = True
    copy_action: str = "flag"  # "flag" (report it) or "block" (GuardError)
    watermark: bool = True
    watermark_scheme: str = "tournament"  # or "green-list" (the logits processor; costs perplexity)
    sign: bool = True
    store: bool = True
    strict_licenses: bool = False
    library: Any = None
    keys: Keys | str | None = "home"
    _opened_library: bool = field(default=False, repr=False)
    _noticed: bool = field(default=False, repr=False)
    _store_failed: bool = field(default=False, repr=False)
    _copy_indexes: dict[str, CopyIndex | None] = field(default_factory=dict, repr=False)
    _watermarks: dict[int, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.copy_action not in ("flag", "block"):
            raise UsageError(f"copy_action {self.copy_action!r}: use flag or block", param="copy_action")
        if self.watermark_scheme not in SCHEMES:
            raise UsageError(f"watermark scheme {self.watermark_scheme!r}: use {' or '.join(SCHEMES)}",
                             param="watermark_scheme")
        if isinstance(self.keys, str):
            if self.keys != "home":
                raise UsageError(f"keys {self.keys!r}: give Keys, None or \"home\"", param="keys")
            self.keys = load_keys() if (self.sign or self.watermark) else None

    def __enter__(self) -> ReleasePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the library this policy opened (not one it was given)."""
        if self._opened_library and self.library is not None:
            self.library.close()
            self.library, self._opened_library = None, False

    def text_watermark(self, vocab_size: int, *, temperature: float = 1.0, num_beams: int = 1,
                       top_k: int = 0) -> Any:
        """The watermark a text generator must sample with; pass it to :func:`release` as
        ``watermark=`` so the manifest records it. ``None`` when off, without keys, or when the
        generator's decoding (``temperature``, ``num_beams``, ``top_k``: pass the ones it uses) makes
        no random draw for the tournament to key (greedy, beam search): then the manifest says no mark,
        which is the truth."""
        if not self.watermark or self.keys is None:
            return None
        if vocab_size not in self._watermarks:  # one per vocabulary size serves every request
            self._watermarks[vocab_size] = text_watermark(vocab_size, self.keys, self.watermark_scheme)
        return watermark_in(self._watermarks[vocab_size], temperature=temperature, num_beams=num_beams,
                            top_k=top_k)

    def grid_watermark(self) -> Any:
        """The keyed draw a tile-map generator must sample with (``apps.maps.generate_map(...,
        watermark=)``; a :class:`~gencraft.guard.tournament.GridWatermark`), ``None`` when off or
        without keys; pass it to :func:`release` as ``watermark=`` so the manifest records it."""
        if not self.watermark or self.keys is None:
            return None

        return GridWatermark(derive_key(self.keys.watermark_secret, "map"))

    def copy_index(self, model: Any) -> CopyIndex | None:
        """The copy index of ``model``'s run (built on first use from its dataset; cached), or ``None``
        when checks are off, for Hugging Face models and for runs whose dataset is gone."""
        path = getattr(model, "path", None) if not isinstance(model, str | os.PathLike) else model
        hf = str(path).startswith("hf:") or (getattr(model, "info", None) or {}).get("kind") == "hf"
        if not self.copy_check or not path or hf:
            return None
        key = str(path)
        if key not in self._copy_indexes:
            try:
                self._copy_indexes[key] = load_run_index(key)
            except GencraftError as e:  # nothing to check against (dataset moved or deleted)
                log.info("no copy check for %s: %s", key, e)
                self._copy_indexes[key] = None
        return self._copy_indexes[key]

    def notice_unsigned(self) -> None:
        if not self._noticed:
            self._noticed = True
            log.warning(UNSIGNED_NOTICE)

    def _library(self) -> Any:
        if self.library is None:
            raise UsageError("the release policy stores outputs but names no library", param="library")
        if callable(self.library) and not hasattr(self.library, "add"):  # a factory: open it now
            self.library = self.library()
            self._opened_library = True
        return self.library


# --- release -------------------------------------------------------------------------------------


@dataclass
class Released:
    """One output as it left the guard: the content (masked, watermarked), its manifest and report,
    the bytes of its file, and where it went (``path``, library ``item_id``)."""

    content: Any
    media: Media
    label: str
    manifest: dict[str, Any]
    report: GuardReport
    data: bytes
    path: Path | None = None
    item_id: int | None = None
    result: Any = None  # what the generator reported, when it says more (a text GenerationResult)

    @property
    def text(self) -> str:
        if not isinstance(self.content, str):
            raise TypeError(f"a released {self.media.kind} has no text")
        return self.content

    @property
    def signed(self) -> bool:
        return "signature" in self.manifest

    @property
    def watermarked(self) -> bool:
        return self.manifest.get("watermark") is not None


def _run_info(model: Any, run_info: dict | None) -> dict[str, Any]:
    if run_info is not None:
        return run_info
    return dict(getattr(model, "info", None) or {}) if not isinstance(model, str | os.PathLike) else {}


def _model_name(model: Any) -> str:
    if model is None:
        return ""
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    return str(getattr(model, "path", "") or "")


def release(content: Any, *, kind: str = "text", label: str | None = None, policy: ReleasePolicy | None = None,
            model: Any = None, run_info: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
            seed: int | None = None, prompt: str | None = None, watermark: Any = None,
            out: str | os.PathLike[str] | None = None, front_matter: bool = False,
            model_name: str | None = None, checks: dict[str, Any] | None = None,
            api_key: str | None = None, store: bool = True) -> Released:
    """Release one output: guard it, sign it, write it to ``out`` and store it, by ``policy``.

    ``kind`` picks the :data:`MEDIA` entry (``text``, ``image``, ``animation``, ``audio``, ``midi``;
    audio is a WAV's bytes, or an :class:`~gencraft.guard.audio.AudioStream` made while it is released);
    ``label`` says what the output is (``completion``, ``chat``, ``write``, ``game.npc``, ``ads``,
    ``image``, ``music``...: the manifest's ``kind``; its part before a dot is the library's kind).
    ``model``: the TextModel/ImageRun (or run path) that made it (its ``info`` is the run's
    gencraft.json; its path finds the copy index); ``watermark``: the text watermark the content
    was sampled with (from :meth:`ReleasePolicy.text_watermark`); ``front_matter``: text only, the
    manifest at the top of the file instead of a sidecar; ``checks``: the caller's own checks
    (schema validation, channel limits), stored beside the guard's verdict; ``store=False`` keeps
    this output out of the library even when the policy stores (a file of outputs stored one by one).

    Raises :class:`GuardError` when the policy refuses the output (stored first, with the verdict,
    when the policy stores).
    """
    media = MEDIA.get(kind)
    if media is None:
        raise UsageError(f"release kind {kind!r}: use one of {', '.join(MEDIA)}", param="kind")
    if front_matter and kind != "text":
        raise UsageError("front matter carries the manifest of text only", param="front_matter")
    policy = policy if policy is not None else ReleasePolicy()
    label = label or kind
    info = _run_info(model, run_info)
    name = model_name if model_name is not None else _model_name(model)
    params = dict(params or {})
    stored_params = params if seed is None else {**params, "seed": params.get("seed", seed)}
    streamed = media.stream is not None and not isinstance(content, bytes | bytearray)  # made while released
    try:
        report, content = _check(content, media, policy, model, info, prompt)
    except GuardError as e:
        if policy.store and store:
            stored = (content if media.store_as == "text" else None if streamed
                      else media.encode(content, None, None))
            _store(policy, media, label, name, prompt, stored, stored_params, None,
                   {"action": "block", "message": str(e), "param": e.param, **(checks or {})}, api_key)
        raise
    keys = policy.keys
    if streamed:
        return _release_stream(content, media, policy, report, label=label, info=info, name=name, params=params,
                               stored_params=stored_params, seed=seed, prompt=prompt, out=out, checks=checks,
                               api_key=api_key, store=store)
    wm = None
    if media.embed is not None and policy.watermark and keys is not None:
        content, wm = media.embed(content, keys)
    elif watermark is not None and keys is not None:
        wm = {"key_id": keys.key_id, **watermark.params}
    manifest = _signed_manifest(policy, media.digest(content), wm, media, label, info, params, seed, report)
    data = media.encode(content, manifest, keys if policy.sign else None)
    if front_matter:
        data = front_matter_block(manifest).encode("utf-8") + data
    path = None
    if out is not None:
        path = Path(out)
        write_bytes(path, data)
        if media.sidecar and not front_matter:
            write_json(sidecar_path(path), manifest)
    item_id = None
    if policy.store and store:
        item_id = _store(policy, media, label, name, prompt, content if media.store_as == "text" else data,
                         stored_params, manifest, {**report.to_dict(), **(checks or {})}, api_key)
    return Released(content, media, label, manifest, report, data, path, item_id)


def _signed_manifest(policy: ReleasePolicy, digest: str, wm: dict | None, media: Media, label: str,
                     info: dict[str, Any], params: dict[str, Any], seed: int | None, report: GuardReport) -> dict:
    """The provenance manifest of one output, signed with the policy's keys (or noticed unsigned)."""
    report.watermark = wm
    manifest = build_manifest(content_sha256=digest, kind=label, run_info=info, parameters=params, seed=seed,
                              guard=report.to_dict(), media_type=media.media_type)
    manifest["watermark"] = wm
    if policy.sign and policy.keys is not None:
        return sign_manifest(manifest, policy.keys)
    if policy.sign:
        policy.notice_unsigned()
    return manifest


def _release_stream(content: Any, media: Media, policy: ReleasePolicy, report: GuardReport, *, label: str,
                    info: dict[str, Any], name: str, params: dict[str, Any], stored_params: dict[str, Any],
                    seed: int | None, prompt: str | None, out: Any, checks: dict[str, Any] | None,
                    api_key: str | None, store: bool) -> Released:
    """:func:`release` of content made while it is released: marked, written and hashed chunk by chunk
    into ``out`` (atomically: complete or absent) or, without ``out``, a temporary file. The library
    reads it back (at most :data:`MAX_STORED_BYTES`; a larger one is stored as its manifest only);
    ``Released.data`` holds those bytes, or ``b""`` when nothing is stored (the file is ``out``)."""
    import tempfile

    keys = policy.keys if policy.watermark else None
    with tempfile.TemporaryDirectory(prefix="gencraft-release-") as scratch:
        target = Path(out) if out is not None else Path(scratch) / f"output{media.kind}"
        with atomic_path(target) as tmp:
            digest, wm = media.stream(content, keys, tmp)
        manifest = _signed_manifest(policy, digest, wm, media, label, info, params, seed, report)
        if out is not None:
            write_json(sidecar_path(target), manifest)
        size = target.stat().st_size
        keep = policy.store and store  # read back only for the library: a long narration stays on disk
        data = target.read_bytes() if keep and size <= MAX_STORED_BYTES else b""
    item_id = None
    if keep:
        note = {} if data else {"stored": f"manifest only: {size / 2**20:.0f} MB is over the library's "
                                          f"{MAX_STORED_BYTES >> 20} MB" + (f"; the file is {out}" if out else "")}
        item_id = _store(policy, media, label, name, prompt, data or None, stored_params, manifest,
                         {**report.to_dict(), **(checks or {}), **note}, api_key)
    return Released(content, media, label, manifest, report, data, Path(out) if out is not None else None, item_id)


def _check(content: Any, media: Media, policy: ReleasePolicy, model: Any, info: dict[str, Any],
           prompt: str | None) -> tuple[GuardReport, Any]:
    """Licenses, moderation (prompt; text output) and the copy check; the content as released."""
    lic = check_licenses(info, strict=policy.strict_licenses)
    prompt_report = moderate(prompt, policy.moderation) if prompt else None
    if prompt_report is not None and prompt_report.blocked:
        raise GuardError(f"prompt blocked by the moderation policy ({', '.join(prompt_report.categories)}); "
                         "change the prompt or the policy", param="prompt")
    if not media.moderated:
        return GuardReport("allow", None, prompt_report, license_warnings=lic), content
    report = moderate(content, policy.moderation)
    if report.blocked:
        raise GuardError(f"output blocked by the moderation policy ({', '.join(report.categories)}); "
                         "regenerate or change the policy", param="moderation")
    index = policy.copy_index(model) if model is not None else None
    copies = index.check(content) if index is not None else None
    if copies is not None:
        enforce(copies, policy.copy_action)
    return GuardReport(report.action, report, prompt_report, copies, None, lic), report.masked_text


def _store(policy: ReleasePolicy, media: Media, label: str, model: str, prompt: str | None, content: Any,
           params: dict[str, Any], manifest: dict | None, guard: dict[str, Any], api_key: str | None) -> int | None:
    """Keep one output in the library; a library that cannot be opened or written is a logged
    warning (the output itself is already out), never a failure of the release."""
    fields: dict[str, Any] = ({"text": content} if media.store_as == "text"
                              else {"image": None if content is None else bytes(content)})
    if policy._store_failed:
        return None
    try:
        return policy._library().add(kind=label.split(".")[0], model=model, prompt=prompt or "",
                                     media_type=media.media_type, parameters=params, manifest=manifest,
                                     guard=guard, api_key=api_key, **fields)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the generated output is kept
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.warning("outputs not stored in the library (%s); pass --no-store (store=False) to skip the library",
                    " ".join(reason.split()))
        policy._store_failed = True  # one warning, not one per output
        return None


__all__ = ["MAX_STORED_BYTES", "MEDIA", "UNSIGNED_NOTICE", "GuardReport", "Media", "ReleasePolicy", "Released",
           "media_for_file", "release", "verify_file"]
