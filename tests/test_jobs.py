"""Studio jobs: uploads and their checks, the job API's errors, and the whole lifecycle with real worker
processes: train, cancel, resume, a server restart, a worker killed with
SIGKILL, the CLI against the server, and generation answering while a job trains."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from test_server import LiveServer, make_text_run  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402

WORDS = "the cat sat on a mat while seven old dogs ran past the silver gate of the quiet town".split()


def corpus(n: int = 300, seed: int = 0) -> str:
    r = random.Random(seed)
    return "\n".join(" ".join(WORDS[(r.randrange(len(WORDS)) + j) % len(WORDS)] for j in range(r.randrange(5, 10)))
                     for _ in range(n)) + "\n"


def write_text_dataset(home: Path, name: str) -> None:
    from gencraft.data import prepare

    src = home / f"{name}.txt"
    src.write_text(corpus(), encoding="utf-8")
    prepare([src], home / "datasets" / name, unit="line", license="CC0-1.0")


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def error_of(r: httpx.Response) -> str:
    return r.json()["error"]["message"]


# ---------------------------------------------------------------- uploads, no workers


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory):
    """A server that does not run jobs (they stay queued): the API's checks, deterministically."""
    home = tmp_path_factory.mktemp("jobs-api")
    write_text_dataset(home, "lines")
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0, jobs=False,
                                 max_upload_bytes=200_000)) as s:
        yield s


@pytest.fixture
def api(quiet: LiveServer):
    with httpx.Client(base_url=quiet.url, timeout=30) as c:
        yield c


def test_uploads_are_checked_and_nothing_half_written(api: httpx.Client, quiet: LiveServer) -> None:
    up = api.post("/v1/gencraft/uploads").json()["id"]
    files = quiet.gc.home / "uploads" / up / "files"
    put = lambda path, data, **kw: api.put(f"/v1/gencraft/uploads/{up}/files/{path}", content=data, **kw)  # noqa: E731

    r = put("stories/a.txt", corpus(20).encode())
    assert r.status_code == 200 and r.json()["type"] == "text"
    r = put("fake.txt", bytes(range(256)) * 8)  # a binary named .txt
    assert r.status_code == 400 and "binary" in error_of(r) and "fake.txt" in error_of(r)
    r = put("pic.png", b"not a picture at all")
    assert r.status_code == 400 and "pic.png" in error_of(r)
    r = put("tool.exe", b"MZ...")
    assert r.status_code == 400 and "unsupported file type" in error_of(r)
    r = put("big.txt", b"a" * 300_000)  # over the configured limit (Content-Length)
    assert r.status_code == 413 and "limit" in error_of(r)
    r = put("big2.txt", (b"a" * 50_000 for _ in range(6)))  # chunked: counted while it arrives
    assert r.status_code == 413
    r = put("..%2F..%2Fescape.txt", b"hello")
    assert r.status_code == 400
    assert not (quiet.gc.home / "escape.txt").exists()

    # archives: a good one unpacks (junk skipped); a bomb, traversal or a link refuses the whole archive
    r = put("more.zip", zip_bytes({"b.txt": corpus(10).encode(), "__MACOSX/._b.txt": b"\0\1", "notes.bin": b"x"}))
    assert r.status_code == 200, r.text
    assert [f["path"] for f in r.json()["files"]] == ["more/b.txt"] and len(r.json()["skipped"]) == 2
    r = put("bomb.zip", zip_bytes({"a.txt": b"x" * 1_500_000}))  # 1.5 kB that would unpack to 1.5 MB
    assert r.status_code == 413 and "unpacks to" in error_of(r)
    r = put("evil.zip", zip_bytes({"../../evil.txt": b"pwned"}))
    assert r.status_code == 400 and "path traversal" in error_of(r)
    r = put("inner.zip", zip_bytes({"ok.txt": b"fine", "x.txt": bytes(range(256)) * 4}))
    assert r.status_code == 400 and "inner.zip:x.txt" in error_of(r)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("link.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    r = put("links.tar.gz", buf.getvalue())
    assert r.status_code == 400 and "link" in error_of(r)

    listed = api.get(f"/v1/gencraft/uploads/{up}").json()
    assert sorted(f["path"] for f in listed["files"]) == ["more/b.txt", "stories/a.txt"]
    leftovers = [p.name for p in (quiet.gc.home / "uploads" / up).iterdir() if p.name != "files"]
    assert leftovers == [] and sorted(p.name for p in files.iterdir()) == ["more", "stories"]
    assert api.get("/v1/gencraft/uploads/up-0000000000000000").status_code == 404


def test_zip_bomb_ratio_is_refused_under_any_limit(tmp_path: Path) -> None:
    from pathlib import PurePosixPath

    from gencraft.errors import DataError
    from gencraft.jobs.uploads import unpack_archive

    (tmp_path / "bomb.zip").write_bytes(zip_bytes({"zeros.txt": b"0" * 4_000_000}))  # ~1000x
    (tmp_path / "files").mkdir()
    with pytest.raises(DataError, match="zip bomb"):
        unpack_archive(tmp_path / "bomb.zip", PurePosixPath("bomb.zip"), tmp_path / "files", 1 << 30)
    assert list((tmp_path / "files").iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["bomb.zip", "files"]


def test_unused_uploads_are_deleted_after_the_retention(tmp_path: Path) -> None:
    from gencraft.jobs import JobManager
    from gencraft.jobs.uploads import new_upload, prune_uploads

    day, now = 86400.0, time.time()
    ups = tmp_path / "uploads"
    old, kept, used, fresh, later = (new_upload(tmp_path) for _ in range(5))
    for up in (old, kept, used, later):
        os.utime(ups / up, (now - 4 * day, now - 4 * day))
    stray = ups / fresh / ".part-crashed"  # a temporary file a crash left in an upload in use
    stray.write_bytes(b"half a file")
    os.utime(stray, (now - 7200, now - 7200))
    assert prune_uploads(tmp_path, 0) == [] and not stray.exists()  # 0 keeps every upload (not a crash's leftovers)
    assert prune_uploads(tmp_path, 3 * day, keep={kept, used, later}) == [old]
    assert (ups / fresh / "files").is_dir()

    m = JobManager(tmp_path, upload_retention_s=3 * day)
    job = m.submit("data.text", {"out": "d", "upload": used})  # a job reads it: its retention starts again
    m.cancel(job["id"])
    assert m.start()  # the supervisor prunes as it starts, then every hour
    try:
        deadline = time.monotonic() + 10
        while (ups / later).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        m.close()
    assert sorted(p.name for p in ups.iterdir()) == sorted([fresh, used])


def test_job_api_errors_queue_and_cancel(api: httpx.Client, quiet: LiveServer, cli) -> None:
    def post(kind, **params):
        return api.post("/v1/gencraft/jobs", json={"kind": kind, "params": params})

    r = post("train.forever", dataset="lines")
    assert r.status_code == 400 and "not a job kind" in error_of(r)
    r = post("train", dataset="lines", model="transformer-xl")
    assert r.status_code == 400 and r.json()["error"]["param"] == "params.model"
    r = post("train", dataset="lines", colour="blue")
    assert r.status_code == 400 and "params.colour: unknown parameter" in error_of(r)
    r = post("train", dataset="lines", set={"n_layer": "many"})
    assert r.status_code == 400 and "n_layer" in error_of(r)
    r = post("train", dataset="gone")
    assert r.status_code == 404 and "'gone' not found" in error_of(r)
    r = post("train", dataset="../lines")
    assert r.status_code == 400
    r = post("data.text", out="lines", upload="up-0000000000000000")
    assert r.status_code == 400 and "already exists" in error_of(r)
    r = post("data.text", out="new", upload="up-0000000000000000")
    assert r.status_code == 404

    a = post("train", dataset="lines")
    b = post("train", dataset="lines")  # same dataset and family: the next free run name
    assert a.status_code == b.status_code == 201
    a, b = a.json(), b.json()
    assert (a["run"], b["run"]) == ("lines-gpt", "lines-gpt-2")
    assert (a["state"], a["queue_position"], b["queue_position"]) == ("queued", 1, 2)
    r = post("train", dataset="lines", out="lines-gpt-2")
    assert r.status_code == 409 and b["id"] in error_of(r)
    r = api.delete("/v1/gencraft/datasets/lines")  # in use by a queued job
    assert r.status_code == 409

    r = cli("jobs", "list", "--server", quiet.url)
    assert r.code == 0 and a["id"] in r.out and "queued" in r.out
    r = cli("jobs", "cancel", a["id"], "--server", quiet.url)
    assert r.code == 0 and "cancelled" in r.out
    again = api.delete(f"/v1/gencraft/jobs/{a['id']}")  # twice is fine
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert api.get(f"/v1/gencraft/jobs/{b['id']}").json()["queue_position"] == 1
    r = cli("jobs", "show", "job-nope", "--server", quiet.url)
    assert r.code == 2 and "not found" in r.err and "404" in r.err
    assert api.delete(f"/v1/gencraft/jobs/{b['id']}").json()["state"] == "cancelled"
    shown = api.get(f"/v1/gencraft/jobs/{b['id']}").json()
    assert shown["resumable"] and shown["error"] == "cancelled before it started"

    assert api.delete("/v1/gencraft/datasets/lines").json()["deleted"]
    r = api.post(f"/v1/gencraft/jobs/{b['id']}/resume")  # its dataset is gone now
    assert r.status_code == 200  # queued again; the worker would fail it with the reason
    r = post("train", dataset="lines")
    assert r.status_code == 404 and "deleted" in error_of(r)
    assert api.delete(f"/v1/gencraft/jobs/{b['id']}").json()["state"] == "cancelled"
    kinds = {k["kind"] for k in api.get("/v1/gencraft/jobs/kinds").json()["data"]}
    assert {"data.text", "data.images", "data.music", "train", "train.image", "evaluate.image", "kits.write",
            "kits.game", "kits.ads"} <= kinds
    # the kits' batches: a missing run, a bad channel, a draft without titles
    r = post("kits.write", model="nope", titles=["x"])
    assert r.status_code == 404 and r.json()["error"]["param"] == "params.model"
    make_text_run(quiet.gc.home, "kit")
    r = post("kits.ads", model="kit", product="Zap", channel="fax")
    assert r.status_code == 400 and r.json()["error"]["param"] == "params.channel"
    r = post("kits.write", model="kit", titles=["  "])
    assert r.status_code == 400 and r.json()["error"]["param"] == "params.titles"


# ---------------------------------------------------------------- real workers


# never ends by itself (the test cancels, restarts, kills); checkpoints every 20 steps
TRAIN = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32, "batch_size": 8, "max_iters": 1_000_000,
         "eval_interval": 20, "eval_iters": 2, "log_interval": 5, "num_threads": 1}


def wait_for(client: httpx.Client, job_id: str, test, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = client.get(f"/v1/gencraft/jobs/{job_id}").json()
        if test(j):
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never got there: {j}")


def step_of(j: dict) -> int:
    return (j.get("progress") or {}).get("step") or 0


def ckpt_step(home: Path, run: str) -> int:
    return json.loads((home / "runs" / run / "checkpoints" / "last" / "state.json").read_text())["step"]


def check_kit_batch(c: httpx.Client, job_id: str) -> None:
    import hashlib

    job = wait_for(c, job_id, lambda j: j["state"] not in ("queued", "running"))
    assert job["state"] == "succeeded", job
    assert job["progress"]["step"] == job["progress"]["total"] == 3 and job["progress"]["unit"] == "records/s"
    res = job["result"]
    assert res["files"] == ["item.csv"] and res["records"] == 3 and len(res["library_ids"]) == 3
    f = c.get(f"/v1/gencraft/jobs/{job_id}/files/item.csv")
    assert f.status_code == 200 and f.headers["content-type"].startswith("text/csv")
    assert len(f.text.strip().splitlines()) == 4  # header + 3 records
    manifest = c.get(f"/v1/gencraft/jobs/{job_id}/files/item.csv.manifest.json").json()
    assert manifest["content_sha256"] == hashlib.sha256(f.content).hexdigest() and manifest["kind"] == "game.item"
    stored = c.get(f"/v1/gencraft/library/{res['library_ids'][0]}").json()
    assert stored["kind"] == "game" and stored["parameters"]["job"] == job_id
    assert c.get(f"/v1/gencraft/jobs/{job_id}/files/..%2Fjob.json").status_code == 400
    assert c.get(f"/v1/gencraft/jobs/{job_id}/files/other.csv").status_code == 404


def test_lifecycle_with_workers_restart_and_kill(tmp_path: Path, cli) -> None:
    home = tmp_path / "home"
    make_text_run(home, "tiny", block_size=256)
    write_text_dataset(home, "lines")  # (the data.text job from an upload: test_studio_workbench.py)
    cfg = ServerConfig(auth=False, home=home, rate_per_minute=0)
    with LiveServer(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        assert json.loads((home / "jobs" / "server.json").read_text())["url"] == s.url  # the port it got
        job = c.post("/v1/gencraft/jobs", json={"kind": "train", "params": {
            "dataset": "lines", "out": "r", "set": TRAIN}}).json()
        other = c.post("/v1/gencraft/jobs", json={"kind": "train", "params": {"dataset": "lines"}}).json()
        # a kit's batch runs beside the training (slot "work"): every record released into the server's
        # library, the whole batch a released CSV in the job's outputs (kits.write/ads: test_server_kits.py)
        kit = c.post("/v1/gencraft/jobs", json={"kind": "kits.game", "params": {
            "model": "tiny", "record": "item", "n": 3, "seed": 2, "format": "csv"}}).json()
        j = wait_for(c, job["id"], lambda j: step_of(j) >= 25)
        assert j["state"] == "running" and j["progress"]["unit"] == "tokens/s" and j["progress"]["eta_s"] > 0
        assert c.get(f"/v1/gencraft/jobs/{other['id']}").json()["state"] == "queued"  # one training at a time
        check_kit_batch(c, kit["id"])
        r = cli("jobs", "cancel", job["id"], "--server", s.url)
        assert r.code == 0
        assert c.delete(f"/v1/gencraft/jobs/{other['id']}").json()["state"] == "cancelled"
        j = wait_for(c, job["id"], lambda j: j["state"] != "running")
        assert j["state"] == "cancelled" and j["resumable"]
        # nothing lost: the worker saved a checkpoint where the cancel found it, not at the last evaluation
        # (every 20 steps), so every step the job reported is in it
        assert ckpt_step(home, "r") >= step_of(j) >= 25
        events = c.get(f"/v1/gencraft/jobs/{job['id']}/events").text  # replay of the whole job, then [DONE]
        kinds = [json.loads(line[6:])["type"] for line in events.splitlines()
                 if line.startswith("data: {")]
        assert {"state", "run", "progress", "metrics", "sample", "cancelled"} <= set(kinds)
        assert events.rstrip().endswith("data: [DONE]")

        assert cli("jobs", "resume", job["id"], "--server", s.url).code == 0
        first = ckpt_step(home, "r")
        wait_for(c, job["id"], lambda j: j["state"] == "running" and step_of(j) > first + 5)
        # generation is answered while the worker trains
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "the cat", "max_tokens": 8, "seed": 1})
        assert r.status_code == 200 and r.json()["choices"][0]["text"]
        assert c.get(f"/v1/gencraft/jobs/{job['id']}").json()["state"] == "running"
    # the server stopped while the job ran: it is marked interrupted, and resumes after a restart
    with LiveServer(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        j = c.get(f"/v1/gencraft/jobs/{job['id']}").json()
        assert j["state"] == "interrupted" and j["resumable"] and "server stopped" in j["error"]
        c.post(f"/v1/gencraft/jobs/{job['id']}/resume")
        second = ckpt_step(home, "r")
        j = wait_for(c, job["id"], lambda j: j["state"] == "running" and step_of(j) >= second + 25 and j["attempt"] == 3)
        os.kill(j["pid"], signal.SIGKILL)  # a worker that dies mid-job
        j = wait_for(c, job["id"], lambda j: j["state"] != "running")
        assert j["state"] == "failed" and "SIGKILL" in j["error"] and j["resumable"]
        assert ckpt_step(home, "r") > second  # what it trained is kept: a resume starts from there

        r = c.get("/v1/gencraft/runs/r").json()
        assert r["resumable"] and r["curves"] and "curves.png" in r["model_card"]
        steps = [x["step"] for x in c.get("/v1/gencraft/runs/r/metrics").json()["data"] if x["split"] == "train"]
        assert steps == sorted(set(steps)) and steps[-1] > second  # three attempts, one curve, no repeats
        assert c.get("/v1/gencraft/runs/r/files/curves.png").headers["content-type"] == "image/png"
        assert c.get("/v1/gencraft/runs/r/files/gencraft.json").status_code == 400
        r = cli("jobs", "show", job["id"], "--server", s.url)
        assert r.code == 0 and "SIGKILL" in r.out and "gencraft jobs resume" in r.out


def test_server_address_for_clients() -> None:
    from gencraft.cli.serve import listen
    from gencraft.errors import UsageError

    assert ServerConfig(host="0.0.0.0", port=8123).url == "http://127.0.0.1:8123"
    assert ServerConfig(host="::", port=8123).url == "http://[::1]:8123"
    assert ServerConfig(port=0).url is None  # not known until `serve` has bound its socket
    sock = listen("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(UsageError, match=f"--port {port}: cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)
    finally:
        sock.close()
    with pytest.raises(UsageError, match="--keep-uploads"):
        ServerConfig(upload_retention_hours=-1).check()


def test_local_queue_without_a_server(gencraft_home: Path, cli) -> None:
    from gencraft.jobs import JobManager

    write_text_dataset(gencraft_home, "lines")
    job = JobManager(gencraft_home).submit("train", {"dataset": "lines"})
    r = cli("jobs", "list")
    assert r.code == 0 and job["id"] in r.out and "queued" in r.out
    r = cli("jobs", "cancel", job["id"])
    assert r.code == 0 and "cancelled before it started" in r.out
    r = cli("jobs", "resume", job["id"])
    assert r.code == 0 and "gencraft serve" in r.out
    assert JobManager(gencraft_home).get(job["id"])["state"] == "queued"
    r = cli("jobs", "resume", job["id"])
    assert r.code == 2 and "only a failed, cancelled or interrupted job" in r.err


def test_speech_jobs_prepare_and_train_a_voice(speech_corpus: dict, gencraft_home: Path) -> None:
    """data.speech on an upload of an LJSpeech folder, then a tts training, in this process (the worker
    around them is the one tested above); recordings are checked like every uploaded file."""
    import shutil

    from gencraft.errors import DataError, UsageError
    from gencraft.jobs.kinds import CheckContext, JobContext, kind_of, parse_params
    from gencraft.jobs.uploads import check_content, new_upload, upload_files_dir

    wav = next((speech_corpus["A"] / "wavs").glob("*.wav"))
    check_content("wavs/a.wav", wav.read_bytes(), "audio")
    with pytest.raises(DataError, match="fake.wav: not a readable recording"):
        check_content("fake.wav", b"RIFF" + bytes(200), "audio")

    up = new_upload(gencraft_home)
    shutil.copytree(speech_corpus["A"], upload_files_dir(gencraft_home, up) / "A")  # a folder dropped whole
    said: list[str] = []

    def run(kind: str, **params):
        k = kind_of(kind)
        p = parse_params(k, params)
        k.check(p, CheckContext(home=gencraft_home))
        return k.run(p, JobContext(job_id="job-s", home=gencraft_home, attempt=1, say=said.append)), p

    with pytest.raises(UsageError, match="params.min_seconds"):
        run("data.speech", out="v", upload=up, license="CC0-1.0", speaker="A", min_seconds=30, max_seconds=20)
    res, _ = run("data.speech", out="voice", upload=up, license="CC0-1.0", speaker="A")
    assert res["counts"]["kept"] == 16 and "16 of 16 recordings kept" in said[-1]

    for model, dataset, param in (("gpt", "voice", "params.model"), ("tts", "voice", "params.preset")):
        with pytest.raises(UsageError) as e:
            run("train", dataset=dataset, model=model, preset="base")
        assert e.value.param == param
    res, p = run("train", dataset="voice", model="tts", part="acoustic",
                 set={"max_iters": 4, "eval_interval": 2, "num_threads": 1})
    assert p.out == "voice-tts" and res["metrics"]["acoustic"]["step"] == 4
