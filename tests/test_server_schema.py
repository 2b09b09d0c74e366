"""Schemathesis over the server's whole OpenAPI schema, in-process (ASGI): every endpoint (the OpenAI
routes, images, the kits, the library, jobs, uploads, datasets, runs, verify — whatever the app lists, so
endpoints that land later are covered too), with the jobs API on (its supervisor starts with the app's
lifespan and runs what is submitted in worker processes, tagged so that ``process_tag`` kills any left at
the end of each test), against a home that also holds broken runs, library items and a dataset.

Stateless: each operation on its own. Stateful: schemathesis' state machine chains operations through the
links it infers from the schema (list -> item, create -> show -> delete: library items listed -> shown ->
rated -> deleted; jobs submitted -> shown -> cancelled -> resumed; uploads created -> filled -> deleted;
datasets and runs listed -> shown). And one job's whole life, with a real worker: submitted, shown while it
trains, cancelled, shown cancelled. Checks everywhere: no response is a 5xx, every response matches the
schema (errors included: the OpenAI error shape is documented on every route), and an error in JSON has
``message``, ``type``, ``param`` and ``code``. (The server has no API-key endpoints: keys are made with
``gencraft keys``.)

``make test`` draws 6 cases per operation and 12 stateful scenarios; ``GENCRAFT_SCHEMA_EXAMPLES=200
GENCRAFT_SCHEMA_SCENARIOS=100 pytest -m slow tests/test_server_schema.py`` many more.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
import time
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
    _library_items(home)
    _dataset(home, "lines")
    return home


def _library_items(home: Path) -> None:
    """A text and an image item for the library's list -> item links to reach."""
    from PIL import Image

    from gencraft.library import Library

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(png, format="PNG")
    lib = Library.open(f"sqlite:///{home / 'library.db'}")
    lib.add(kind="text", model="tiny", prompt="the", text="the cat sat on the mat")
    lib.add(kind="image", model="pixels", prompt="a", image=png.getvalue())
    lib.close()


def _dataset(home: Path, name: str) -> Path:
    """A small text dataset under ``home/datasets/name``, prepared the real way."""
    from gencraft.data import prepare

    src = home / f"{name}.txt"
    src.write_text("\n".join(f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(400)))
    return prepare([src], home / "datasets" / name, license="CC0-1.0", unit="line")


_HOME = _home()
APP = create_app(ServerConfig(auth=False, home=_HOME, rate_per_minute=0, jobs=True))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
EXAMPLES = int(os.environ.get("GENCRAFT_SCHEMA_EXAMPLES", "6"))
SCENARIOS = int(os.environ.get("GENCRAFT_SCHEMA_SCENARIOS", "12"))
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(autouse=True)
def tagged_workers(process_tag):
    """Every job worker this test's server starts carries the test's tag (killed when it ends)."""
    APP.state.gc.jobs.env.update(process_tag)
    yield


def _check_response(response, case) -> None:
    case.validate_response(response, checks=CHECKS)
    ctype = response.headers.get("content-type") or [""]
    if response.status_code >= 400 and ctype[0].startswith("application/json"):
        err = response.json().get("error")
        assert err is not None and {"message", "type", "param", "code"} <= set(err), response.text[:300]


def _check(case):
    response = case.call()
    _check_response(response, case)
    return response


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_no_schema_violations(case) -> None:
    _check(case)


def test_a_job_submitted_shown_cancelled_through_the_schema() -> None:
    """A training job with a real worker: every response checked against the schema."""
    _dataset(_HOME, "life")
    jobs = schema["/v1/gencraft/jobs"]["POST"]
    job = schema["/v1/gencraft/jobs/{job_id}"]
    r = _check(jobs.Case(body={"kind": "train", "params": {"dataset": "life", "out": "life-run",
                                                             "set": {"max_iters": 100000, "eval_interval": 50,
                                                                     "num_threads": 1}}}))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:  # the worker starts, loads the data and reports its first steps
        shown = _check(job["GET"].Case(path_parameters={"job_id": job_id})).json()
        if shown["state"] == "running" and (shown.get("progress") or {}).get("step"):
            break
        assert shown["state"] in ("queued", "running") and time.monotonic() < deadline, shown
        time.sleep(0.5)
    r = _check(job["DELETE"].Case(path_parameters={"job_id": job_id}))
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while (shown := _check(job["GET"].Case(path_parameters={"job_id": job_id})).json())["state"] not in (
            "cancelled", "failed", "interrupted"):
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    assert shown["state"] == "cancelled", shown
    assert (_HOME / "runs" / "life-run" / "checkpoints").is_dir()  # SIGTERM saved where it was


class Chains(schema.as_state_machine()):  # type: ignore[misc]
    """Operations chained through the links schemathesis infers; only the two checks above (a cancelled
    job stays listed, by design, so "use after free" does not apply to DELETE /jobs/ID)."""

    calls: list[str] = []

    def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
        Chains.calls.append(f"{case.operation.label} -> {response.status_code}")
        _check_response(response, case)


def test_chained_operations_no_server_errors_and_no_schema_violations() -> None:
    links = {(a, t.target.label) for a, op in Chains._transitions.operations.items() for t in op.outgoing}
    _library_items(_HOME)  # the stateless tests above may have deleted the first ones
    for chain in (("GET /v1/gencraft/library", "POST /v1/gencraft/library/{item_id}/rating"),
                  ("GET /v1/gencraft/library", "DELETE /v1/gencraft/library/{item_id}"),
                  ("POST /v1/gencraft/jobs", "GET /v1/gencraft/jobs/{job_id}"),
                  ("POST /v1/gencraft/jobs", "DELETE /v1/gencraft/jobs/{job_id}"),
                  ("POST /v1/gencraft/uploads", "PUT /v1/gencraft/uploads/{upload_id}/files/{path}")):
        assert chain in links, chain
    Chains.run(settings=settings(max_examples=SCENARIOS, stateful_step_count=6, deadline=None, derandomize=True,
                                 suppress_health_check=list(HealthCheck)))
    reached = {c.split(" -> ")[0] for c in Chains.calls if c.endswith(("-> 200", "-> 201"))}
    for resource in ("/v1/gencraft/datasets/{name}", "/v1/gencraft/uploads/{upload_id}"):  # real ids reached them
        assert any(op.split(" ")[1].startswith(resource) for op in reached), (resource, sorted(set(Chains.calls)))


def test_every_endpoint_is_fuzzed() -> None:
    """The parametrization above comes from the live schema: a new endpoint is in it without a list here."""
    paths = set(APP.openapi()["paths"])
    for expected in ("/v1/completions", "/v1/chat/completions", "/v1/images/generations", "/v1/gencraft/verify",
                     "/v1/gencraft/library"):
        assert expected in paths
