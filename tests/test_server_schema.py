"""Schemathesis over the server's whole OpenAPI schema, in-process (ASGI): every endpoint (the OpenAI
routes, images, the kits, the library, keys, jobs, verify — whatever the app lists, so endpoints that land
later are covered too), against a home that also holds broken runs. Checks: no response is a 5xx, every
response matches the schema (errors included: the OpenAI error shape is documented on every route),
and an error in JSON has ``message``, ``type``, ``param`` and ``code``.

``make test`` draws 6 cases per operation; ``GENCRAFT_SCHEMA_EXAMPLES=200 pytest -m slow
tests/test_server_schema.py`` many more.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from test_server import make_image_run, make_text_run  # noqa: E402

from gencraft.server import ServerConfig, create_app  # noqa: E402


def _home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="gencraft-schema-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # made at import (the schema needs the app)
    os.environ.setdefault("GENCRAFT_HOME", str(home))
    make_text_run(home, "tiny")
    make_image_run(home, "pixels")
    broken = make_text_run(home, "broken")  # a wrong value in gencraft.json: a 400 naming the file
    info = json.loads((broken / "gencraft.json").read_text())
    info["model"]["n_embd"] = -5
    (broken / "gencraft.json").write_text(json.dumps(info))
    (home / "runs" / "notjson").mkdir()
    (home / "runs" / "notjson" / "gencraft.json").write_text("{")
    return home


_HOME = _home()
APP = create_app(ServerConfig(auth=False, home=_HOME, rate_per_minute=0, jobs=False))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
EXAMPLES = int(os.environ.get("GENCRAFT_SCHEMA_EXAMPLES", "6"))


def _check(case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    ctype = response.headers.get("content-type") or [""]
    if response.status_code >= 400 and ctype[0].startswith("application/json"):
        err = response.json().get("error")
        assert err is not None and {"message", "type", "param", "code"} <= set(err), response.text[:300]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_no_schema_violations(case) -> None:
    _check(case)


def test_every_endpoint_is_fuzzed() -> None:
    """The parametrization above comes from the live schema: a new endpoint is in it without a list here."""
    paths = set(APP.openapi()["paths"])
    for expected in ("/v1/completions", "/v1/chat/completions", "/v1/images/generations", "/v1/gencraft/verify",
                     "/v1/gencraft/library"):
        assert expected in paths
