"""API keys (hashed at rest) and per-key rate limits (token buckets).

A key looks like ``gck_<id>_<secret>``: ``id`` (8 hex) finds its record, ``secret`` (32 random
bytes, URL-safe) is never stored -- only ``sha256(salt || key)`` with a random 16-byte salt per
key. Keys are 256-bit random strings, not passwords, so a salted SHA-256 is the right tool (a slow
KDF protects guessable secrets; these are not guessable) and checking one costs microseconds.

The store is ``GENCRAFT_HOME/api_keys.json`` (written atomically, owner-only); a running server
re-reads it when it changes, so ``gencraft keys create|revoke`` take effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gencraft.errors import NotFoundError, UsageError
from gencraft.io import write_json
from gencraft.paths import home
from gencraft.server.errors import RateLimited, Unauthenticated

PREFIX = "gck"


@dataclass
class KeyRecord:
    """What is stored about one key (never the key itself)."""

    id: str
    name: str
    salt: str
    sha256: str
    created: str
    revoked: bool = False
    rate_per_minute: float | None = None  # None = the server's default


def _hash(salt: str, key: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + key.encode("utf-8")).hexdigest()


def store_path() -> Path:
    return home() / "api_keys.json"


class KeyStore:
    """The API keys of this machine."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or store_path()
        self._mtime: float | None = None
        self._records: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, KeyRecord]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._records, self._mtime = {}, None
            return self._records
        if mtime != self._mtime:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                recs = {r["id"]: KeyRecord(**r) for r in data.get("keys", [])}
            except (json.JSONDecodeError, TypeError, KeyError) as e:
                raise UsageError(f"{self.path}: not a valid API key store ({e}); fix or delete it",
                                 param="api_keys") from None
            self._records, self._mtime = recs, mtime
        return self._records

    def _save(self, recs: dict[str, KeyRecord]) -> None:
        write_json(self.path, {"format": 1, "keys": [asdict(r) for r in recs.values()]})
        os.chmod(self.path, 0o600)

    def records(self) -> list[KeyRecord]:
        with self._lock:
            return list(self._load().values())

    def create(self, name: str = "default", rate_per_minute: float | None = None) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the key (shown once, never stored)."""
        if rate_per_minute is not None and rate_per_minute <= 0:
            raise UsageError(f"--rate {rate_per_minute}: must be > 0 requests per minute", param="rate")
        with self._lock:
            recs = dict(self._load())
            kid = secrets.token_hex(4)
            while kid in recs:
                kid = secrets.token_hex(4)
            key = f"{PREFIX}_{kid}_{secrets.token_urlsafe(32)}"
            salt = secrets.token_hex(16)
            from datetime import UTC, datetime

            rec = KeyRecord(kid, name, salt, _hash(salt, key),
                            datetime.now(UTC).replace(microsecond=0).isoformat(), False, rate_per_minute)
            recs[kid] = rec
            self._save(recs)
            return rec, key

    def revoke(self, key_id: str) -> KeyRecord:
        with self._lock:
            recs = dict(self._load())
            if key_id not in recs:
                raise NotFoundError(f"API key {key_id!r} not found; see `gencraft keys list`", param="key_id")
            recs[key_id].revoked = True
            self._save(recs)
            return recs[key_id]

    def verify(self, key: str) -> KeyRecord:
        """The record of a valid key; Unauthenticated otherwise."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            raise Unauthenticated("invalid API key (expected gck_...); create one with `gencraft keys create`")
        with self._lock:
            rec = self._load().get(parts[1])
        if rec is None or not hmac.compare_digest(rec.sha256, _hash(rec.salt, key)):
            raise Unauthenticated("invalid API key; create one with `gencraft keys create`")
        if rec.revoked:
            raise Unauthenticated(f"API key {rec.id} was revoked; create a new one with `gencraft keys create`")
        return rec


class TokenBucket:
    """``rate`` requests per minute with bursts up to ``burst``."""

    def __init__(self, rate_per_minute: float, burst: float | None = None) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1.0, rate_per_minute / 6))
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when allowed; otherwise how many seconds until a request would be."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per key id (or client address when auth is off)."""

    def __init__(self, rate_per_minute: float, burst: float | None = None) -> None:
        self.rate, self.burst = rate_per_minute, burst
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, who: str, rate_per_minute: float | None = None) -> None:
        rate = rate_per_minute or self.rate
        if rate <= 0:
            return
        with self._lock:
            bucket = self._buckets.get(who)
            if bucket is None or bucket.rate != rate / 60.0:
                bucket = self._buckets[who] = TokenBucket(rate, self.burst)
            wait = bucket.take()
        if wait:
            raise RateLimited(f"rate limit of {rate:g} requests per minute reached for {who}; "
                              f"retry in {wait:.1f} s", retry_after=wait)


def describe(rec: KeyRecord) -> dict[str, Any]:
    d = asdict(rec)
    d.pop("salt")
    d.pop("sha256")
    return d


__all__ = ["KeyRecord", "KeyStore", "RateLimiter", "TokenBucket", "describe", "store_path"]
