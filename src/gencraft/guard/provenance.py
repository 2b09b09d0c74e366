"""Signed provenance manifests and their carriers (JSON sidecar, Markdown front matter, PNG iTXt, C2PA).

The manifest (docs/architecture.md, "Provenance manifest") records generator, run id and model
digest, sources and licenses, parameters, seed, watermark key id and guard results, plus
``content_sha256``. It is signed with Ed25519 over its canonical JSON (sorted keys, no spaces,
UTF-8) without the ``signature`` field; the signature block also carries the raw public key so
anyone can check it, and ``verify`` says whether that key is this machine's (``trusted``).

What ``content_sha256`` covers: for text, the UTF-8 bytes of the text (the body below any front
matter); for images, the decoded pixels (``MODE:WxH:`` + raw bytes), so metadata chunks (ours
and C2PA's) can be added without changing it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gencraft import __version__
from gencraft.errors import DataError, GencraftError, NotFoundError
from gencraft.guard.keys import Keys, key_id_of, load_keys, trust_of

PNG_KEY = "gencraft:manifest"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_FRONT = re.compile(r"\A---\ngencraft_manifest: (?P<json>.*)\n---\n", re.DOTALL)


def canonical_json(obj: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_sha256(image) -> str:
    """SHA-256 of a PIL image's pixels (mode, size and raw bytes), independent of file metadata."""
    h = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def build_manifest(*, content_sha256: str, kind: str, run_info: dict | None = None,
                   parameters: dict | None = None, seed: int | None = None,
                   watermark_key_id: str | None = None, guard: dict | None = None,
                   media_type: str = "text/plain") -> dict:
    """A provenance manifest (unsigned) for one artifact; ``run_info`` is the run's gencraft.json."""
    info = run_info or {}
    data = info.get("data") or {}
    sources = [{"path": s.get("path"), "sha256": s.get("sha256"), "license": s.get("license", "unknown")}
               for s in data.get("sources") or []]
    return {
        "generator": f"gencraft {__version__}",
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "run_id": info.get("run_id"),
        "model_digest": info.get("model_digest"),
        "kind": kind,
        "media_type": media_type,
        "sources": sources,
        "parameters": parameters or {},
        "seed": seed,
        "watermark": {"key_id": watermark_key_id} if watermark_key_id else None,
        "guard": guard or {},
        "content_sha256": content_sha256,
    }


def sign_manifest(manifest: dict, keys: Keys) -> dict:
    """Return a copy of ``manifest`` with ``signature`` = Ed25519 over its canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    sig = keys.sign(canonical_json(body))
    return {**body, "signature": {"alg": "Ed25519", "key_id": keys.key_id,
                                  "public_key": keys.public_raw.hex(),
                                  "value": base64.b64encode(sig).decode()}}


@dataclass
class Verification:
    """Outcome of :func:`verify_manifest` / :func:`verify_path`."""

    status: str  # "valid" (signed by a trusted key) | "unknown_key" (intact, key not trusted) | "tampered" | "unsigned"
    reason: str
    key_id: str | None = None
    trusted: bool = False  # signed by this machine's key
    manifest: dict | None = None
    c2pa: dict | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.status == "valid"

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "key_id": self.key_id,
                "trusted": self.trusted, "c2pa": self.c2pa, "manifest": self.manifest}


def verify_manifest(manifest: dict | None, content_sha256: str) -> Verification:
    """Check the signature of ``manifest`` and that it describes content with ``content_sha256``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if manifest is None or manifest == {}:
        return Verification("unsigned", "no provenance manifest found")
    if not isinstance(manifest, dict):
        return Verification("tampered", f"the manifest is a JSON {type(manifest).__name__}, not an object")
    sig = manifest.get("signature")
    if not isinstance(sig, dict) or "value" not in sig:
        return Verification("unsigned", "the manifest carries no signature", manifest=manifest)
    try:
        public_raw = bytes.fromhex(sig.get("public_key", ""))
        value = base64.b64decode(sig["value"], validate=True)
        kid = key_id_of(public_raw)
        if sig.get("alg") != "Ed25519" or kid != sig.get("key_id"):
            raise ValueError("key id does not match the public key")
        body = {k: v for k, v in manifest.items() if k != "signature"}
        Ed25519PublicKey.from_public_bytes(public_raw).verify(value, canonical_json(body))
    except (ValueError, InvalidSignature, TypeError):
        return Verification("tampered", "manifest changed: its signature does not verify",
                            sig.get("key_id"), manifest=manifest)
    who = trust_of(kid)
    trusted = who is not None
    if manifest.get("content_sha256") != content_sha256:
        return Verification("tampered", "content changed: its sha256 differs from the manifest's",
                            kid, trusted, manifest)
    if not trusted:  # anyone can make a key and sign: intact, but it says nothing of who made it
        return Verification("unknown_key", f"signature valid and content matches, but key id {kid} is not trusted "
                            "here (not this machine's, not in the trust list); if you know whose key it is: "
                            "gencraft keys trust FILE", kid, False, manifest)
    who = "this machine's key" if who == "this machine" else f"trusted key {who!r}"
    return Verification("valid", f"signature valid ({who}, key id {kid}); content matches", kid, True, manifest)


# --- text carriers -------------------------------------------------------------------------------


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".manifest.json")


def front_matter_block(manifest: dict) -> str:
    """The Markdown front matter that carries ``manifest`` at the top of a text file."""
    return "---\ngencraft_manifest: " + json.dumps(manifest, ensure_ascii=False, sort_keys=True) + "\n---\n"


def read_text_artifact(path: str | Path) -> tuple[str, dict | None]:
    """The text of ``path`` (without front matter) and its manifest (sidecar or front matter)."""
    p = Path(path)
    try:
        raw = p.read_bytes().decode("utf-8")
    except FileNotFoundError as e:
        raise NotFoundError(f"file {p} not found", param="file") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is neither UTF-8 text nor a PNG; verify reads generated text and PNG images",
                        param="file") from e
    manifest = None
    m = _FRONT.match(raw)
    if m:
        raw = raw[m.end():]
        try:
            manifest = json.loads(m.group("json"))
        except json.JSONDecodeError:
            manifest = {"signature": {"alg": "Ed25519", "value": "!"}}  # unreadable: cannot verify
    side = sidecar_path(p)
    if manifest is None and side.is_file():
        try:
            manifest = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = {"signature": {"alg": "Ed25519", "value": "!"}}
    return raw, manifest


# --- PNG carriers --------------------------------------------------------------------------------


def png_bytes_with_manifest(image, manifest: dict) -> bytes:
    """Encode ``image`` as PNG with the manifest in an iTXt chunk (key ``gencraft:manifest``)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt(PNG_KEY, json.dumps(manifest, ensure_ascii=False, sort_keys=True), zip=True)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def c2pa_manifest_definition(manifest: dict, title: str) -> dict:
    """The C2PA manifest we embed: a ``c2pa.created`` action with ``trainedAlgorithmicMedia`` and
    our gencraft manifest as an ``org.gencraft.provenance`` assertion."""
    return {
        "claim_generator_info": [{"name": "gencraft", "version": __version__}],
        "title": title,
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": {"name": "gencraft", "version": __version__}}]}},
            {"label": "org.gencraft.provenance", "data": manifest},
        ],
    }


def embed_c2pa(png: bytes, manifest: dict, keys: Keys, *, title: str = "image.png") -> bytes:
    """Sign ``png`` with a C2PA manifest (``c2pa-python``, Ed25519, the local CA's certificate chain)."""
    import c2pa

    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"ed25519", keys.cert_chain_pem, keys.key_pem, None))
    src, dst = io.BytesIO(png), io.BytesIO()
    with c2pa.Builder(c2pa_manifest_definition(manifest, title)) as builder:
        builder.sign(signer, "image/png", src, dst)
    return dst.getvalue()


def read_c2pa(data: bytes) -> dict | None:
    """The C2PA store of a PNG as a dict (``validation_state`` added), or ``None`` when it has none.

    When this machine has keys, its local CA is added to the reader's trust anchors, so images it
    signed read as ``Trusted`` (others' as ``Valid`` when intact)."""
    import c2pa

    keys = load_keys()
    context = None
    if keys is not None and (keys.folder / "ca.pem").is_file():
        context = c2pa.Context.from_dict({"trust": {"user_anchors": (keys.folder / "ca.pem").read_text()}})
    try:
        with c2pa.Reader("image/png", io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
            store["validation_state"] = str(reader.get_validation_state())
            return store
    except Exception:  # c2pa raises its own error types when there is no manifest
        return None


def read_png_manifest(data: bytes) -> tuple[Any, dict | None]:
    """Decode a PNG: ``(image, manifest or None)``."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    raw = image.info.get(PNG_KEY)
    if raw is None:
        return image, None
    try:
        return image, json.loads(str(raw))
    except json.JSONDecodeError:
        return image, {"signature": {"alg": "Ed25519", "value": "!"}}


def verify_path(path: str | Path, file_digest: Any = None) -> Verification:
    """``valid`` / ``tampered`` / ``unsigned`` for a generated PNG (manifest inside), a file with a
    sidecar manifest of a non-text media type (checked against ``file_digest(bytes)``, by default the
    bytes' SHA-256; ``gencraft.guard.verify_file`` passes the media entry's), or text."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"file {p} not found", param="file")
    data = p.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            image, manifest = read_png_manifest(data)
        except Exception as e:
            return Verification("tampered", f"the PNG cannot be decoded ({e})")
        result = verify_manifest(manifest, image_sha256(image))
        result.c2pa = _c2pa_summary(read_c2pa(data))
        return result
    side = sidecar_path(p)
    if side.is_file():  # binary media (MIDI, WAV) carry a sidecar over their content
        try:
            manifest = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = None
        if isinstance(manifest, dict) and not str(manifest.get("media_type", "text/plain")).startswith("text/"):
            try:
                digest = (file_digest or (lambda d: hashlib.sha256(d).hexdigest()))(data)
            except GencraftError as e:
                return Verification("tampered", f"the file cannot be read as {manifest.get('media_type')} ({e})")
            return verify_manifest(manifest, digest)
    text, manifest = read_text_artifact(p)
    return verify_manifest(manifest, text_sha256(text))


def _c2pa_summary(store: dict | None) -> dict | None:
    if store is None:
        return None
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    return {"validation_state": store.get("validation_state"),
            "signature": active.get("signature_info"),
            "status": [s.get("code") for s in store.get("validation_status") or []]}
