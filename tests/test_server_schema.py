"""Schemathesis against the server's own OpenAPI schema, in-process (ASGI): no request gets a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from test_server import make_image_run, make_text_run  # noqa: E402

from gencraft.server import ServerConfig, create_app  # noqa: E402

_HOME = Path(tempfile.mkdtemp(prefix="gencraft-schema-"))
make_text_run(_HOME, "tiny")
make_image_run(_HOME, "pixels")
APP = create_app(ServerConfig(auth=False, home=_HOME, rate_per_minute=0))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    ctype = response.headers.get("content-type") or [""]
    if response.status_code >= 400 and ctype[0].startswith("application/json"):
        err = response.json().get("error")
        assert err is not None and {"message", "type", "param", "code"} <= set(err)
