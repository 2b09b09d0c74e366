"""Local keys: an Ed25519 signing key, a watermark secret, a local CA and a C2PA signing certificate.

``gencraft keys init`` writes them under ``GENCRAFT_HOME/keys/`` (folder 0700, files 0600):

=================  ==================================================================
``signing.pem``    Ed25519 private key (PKCS#8 PEM): signs provenance manifests and C2PA
``signing.pub``    its public key (raw 32 bytes, hex)
``watermark.key``  32 random bytes (hex): the secret of the text and image watermarks
``ca.pem``         a local certificate authority (self-signed, Ed25519)
``ca.key``         the CA's private key
``signer.pem``     end-entity certificate for the signing key, issued by the local CA, then the CA
                   certificate (the chain C2PA wants: it refuses self-signed signing certificates)
``key.json``       ``{"key_id", "created", "alg"}``
``trusted.json``   keys of other people this machine trusts (``gencraft keys trust FILE``):
                   ``{"KEY_ID": {"public_key": hex, "name", "added"}}`` — a trust list like C2PA's
=================  ==================================================================

The key id is the first 16 hex digits of the SHA-256 of the raw public key; manifests carry the
key id, never a key.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gencraft.errors import UsageError
from gencraft.io import write_bytes, write_json
from gencraft.paths import home
from gencraft.schemas import read_json


def keys_dir() -> Path:
    """``GENCRAFT_HOME/keys`` (not created)."""
    return home() / "keys"


def key_id_of(public_raw: bytes) -> str:
    """Fingerprint of an Ed25519 public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass
class Keys:
    """The loaded key material (see the module docstring)."""

    key_id: str
    private_key: object  # cryptography Ed25519PrivateKey
    public_raw: bytes
    watermark_secret: bytes
    key_pem: bytes
    cert_chain_pem: bytes
    folder: Path

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)  # type: ignore[attr-defined]


def _write_private(path: Path, data: bytes) -> None:
    write_bytes(path, data)
    os.chmod(path, 0o600)


def _cert(subject, issuer, public_key, signing_key, *, ca: bool, days: int):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                 encipher_only=False, decipher_only=False)
    b = b.add_extension(x509.KeyUsage(**usage), critical=True)
    if not ca:
        b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                            critical=False))
    return b.sign(signing_key, None)


def init_keys(*, force: bool = False, name: str = "gencraft user") -> Keys:
    """Create the signing key, watermark secret, local CA and certificate; returns them loaded.

    Raises :class:`UsageError` when keys exist already (``force=True`` replaces them; content
    signed with the old key then no longer verifies as trusted).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    folder = keys_dir()
    if (folder / "key.json").exists() and not force:
        raise UsageError(f"keys already exist in {folder}; pass --force to replace them", param="force")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    key = ed25519.Ed25519PrivateKey.generate()
    ca_key = ed25519.Ed25519PrivateKey.generate()
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = key_id_of(public_raw)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gencraft local CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    ee_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gencraft signer {kid}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    ca_cert = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True, days=3650)
    ee_cert = _cert(ee_name, ca_name, key.public_key(), ca_key, ca=False, days=825)

    _write_private(folder / "signing.pem", key.private_bytes(pem, pkcs8, none))
    _write_private(folder / "ca.key", ca_key.private_bytes(pem, pkcs8, none))
    _write_private(folder / "watermark.key", secrets.token_hex(32).encode() + b"\n")
    _write_private(folder / "signing.pub", public_raw.hex().encode() + b"\n")
    _write_private(folder / "ca.pem", ca_cert.public_bytes(pem))
    _write_private(folder / "signer.pem", ee_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    _write_private(folder / "key.json", json.dumps({"key_id": kid, "created": created, "alg": "Ed25519"},
                                                   indent=2).encode() + b"\n")
    return load_keys(required=True)  # type: ignore[return-value]


def load_keys(*, required: bool = False, folder: Path | None = None) -> Keys | None:
    """The keys in ``folder`` (default ``GENCRAFT_HOME/keys``), or ``None`` when there are none
    (``required``: raise)."""
    from cryptography.hazmat.primitives import serialization

    folder = keys_dir() if folder is None else Path(folder)
    if not (folder / "key.json").is_file():
        if required:
            raise UsageError(f"no keys in {folder}; create them with `gencraft keys init`", param="keys")
        return None
    try:
        key_pem = (folder / "signing.pem").read_bytes()
        key = serialization.load_pem_private_key(key_pem, password=None)
        public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        secret = bytes.fromhex((folder / "watermark.key").read_text().strip())
        chain = (folder / "signer.pem").read_bytes()
    except (OSError, ValueError) as e:
        raise UsageError(f"keys in {folder} are unreadable ({e}); recreate them with `gencraft keys init --force`",
                         param="keys") from e
    return Keys(key_id_of(public_raw), key, public_raw, secret, key_pem, chain, folder)


# ---- the trust list: other people's keys (gencraft keys trust FILE) ----------------------------


def _trust_file() -> Path:
    return keys_dir() / "trusted.json"


def trusted_keys() -> dict[str, dict]:
    """The keys this machine trusts besides its own: ``{key_id: {"public_key", "name", "added"}}``."""
    f = _trust_file()
    if not f.is_file():
        return {}
    data = read_json(f, error=UsageError, hint="fix or delete it (gencraft keys untrust KEY_ID rewrites it)")
    if not isinstance(data, dict):
        raise UsageError(f"{f}: expected a JSON object of key id -> key", param="keys")
    out = {}
    for kid, rec in data.items():
        pub = rec.get("public_key") if isinstance(rec, dict) else None
        try:
            ok = isinstance(pub, str) and key_id_of(bytes.fromhex(pub)) == kid
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"{f}: field {kid}: the public key does not match its key id; "
                             f"remove it with `gencraft keys untrust {kid}`", param="keys")
        out[kid] = rec
    return out


def read_public_key(path: str | os.PathLike[str]) -> bytes:
    """A raw Ed25519 public key from a file: hex (``signing.pub``, ``gencraft keys export``), a PEM
    public key or a PEM certificate (its subject's key). Anything else is a UsageError naming the file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{p}: is a folder; give a public key file (signing.pub, or PEM)", param="file") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot be read ({e.strerror}); give a public key file", param="file") from None
    text = data.decode("ascii", "replace").strip()
    key = None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"-----BEGIN PUBLIC KEY-----" in data:
            key = serialization.load_pem_public_key(data)
        elif len(text) == 64:
            return bytes(Ed25519PublicKey.from_public_bytes(bytes.fromhex(text)).public_bytes_raw())
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{p}: not an Ed25519 public key (expected 64 hex digits as in signing.pub, a PEM public "
                         "key or a PEM certificate)", param="file")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def trust_key(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Add the public key in ``path`` to this machine's trust list; returns its key id."""
    public_raw = read_public_key(path)
    kid = key_id_of(public_raw)
    trusted = trusted_keys()
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    trusted[kid] = {"public_key": public_raw.hex(), "name": name or Path(path).stem, "added": created}
    folder = keys_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(_trust_file(), trusted)
    os.chmod(_trust_file(), 0o600)
    return kid


def untrust_key(key_id: str) -> None:
    """Remove ``key_id`` from the trust list (a UsageError when it is not there)."""
    trusted = trusted_keys()
    if key_id not in trusted:
        raise UsageError(f"key id {key_id!r} is not in the trust list; `gencraft keys trusted` lists it", param="key_id")
    del trusted[key_id]
    write_json(_trust_file(), trusted)


def trust_of(key_id: str) -> str | None:
    """Who vouches for ``key_id``: ``"this machine"``, the trusted key's name, or None (unknown)."""
    local = load_keys()
    if local is not None and local.key_id == key_id:
        return "this machine"
    rec = trusted_keys().get(key_id)
    return None if rec is None else str(rec.get("name") or key_id)
