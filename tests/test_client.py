"""The client commands: `digits submit`, `status`, `results`, `cancel`.

The path walking and chunking are checked on their own; everything that talks HTTP
runs the real `digits` command in a subprocess, against a closed port (server down)
or against `live_stack` (the real API, Celery workers, Redis and SQLite)."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cli.client_cmds import PathMap, chunked, collect_files
from cli.main import UserError

DIGITS = Path(sys.executable).with_name("digits")
DATA_DIR = os.environ.get("DIGITS_DATA_DIR", "/work/shared/data/mnist")


def run_digits(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `digits` command, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DIGITS_SERVER", None)  # every call names its server
    return subprocess.run([str(DIGITS), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound once, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode not in (0, 1), result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def mnist_digits(n: int, start: int = 0):
    from shared.mnist import load_split

    split = load_split(DATA_DIR, "test")
    return split.images[start:start + n], split.labels[start:start + n]


def save_png(path: Path, pixels) -> Path:
    """An MNIST digit as a scan would look: dark ink on white paper."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(255 - pixels).save(path)
    return path


# --- finding files, without a server ------------------------------------------------


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_folders_are_walked_recursively_skipping_hidden_and_non_images(tmp_path):
    scans = tmp_path / "scans"
    touch(scans / "a.png")
    touch(scans / "sub" / "deeper" / "b.JPG")
    touch(scans / ".hidden.png")
    touch(scans / ".git" / "c.png")
    touch(scans / "notes.txt")
    make_zip(scans / "batch.zip", {"z1.png": b"1", "dir/z2.png": b"2", ".z3.png": b"3",
                                   "__MACOSX/._z1.png": b"4"})

    files, skipped = collect_files([scans])

    assert [f.name for f in files] == ["a.png", "batch.zip", "sub/deeper/b.JPG"]
    assert [f.path for f in files] == [scans / "a.png", scans / "batch.zip",
                                       scans / "sub" / "deeper" / "b.JPG"]
    assert skipped == 1  # notes.txt
    assert files[1].is_zip and files[1].members == ["z1.png", "dir/z2.png"]
    assert not files[0].is_zip and files[0].members is None


def test_a_file_named_on_the_command_line_is_always_sent(tmp_path):
    notes = touch(tmp_path / "notes.txt", b"hello")
    files, skipped = collect_files([notes])
    assert [(f.name, f.size) for f in files] == [("notes.txt", 5)]
    assert skipped == 0


def test_a_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        collect_files([tmp_path / "missing"])


def test_a_broken_zip_is_sent_as_a_plain_file(tmp_path):
    """The server fails it alone, as it does any file that is not an image."""
    files, _ = collect_files([touch(tmp_path / "bad.zip", b"not a zip")])
    assert [(f.name, f.is_zip) for f in files] == [("bad.zip", False)]
    assert PathMap(files).local_path("bad.zip") == (tmp_path / "bad.zip").as_posix()


def test_chunks_respect_the_file_and_byte_caps(tmp_path):
    for i in range(7):
        touch(tmp_path / f"{i}.png", b"x" * 10)
    touch(tmp_path / "big.png", b"x" * 100)
    files, _ = collect_files([tmp_path])  # 0..6.png, then big.png

    by_count = [[f.name for f in c] for c in chunked(files, max_files=3, max_bytes=10**6)]
    assert by_count == [["0.png", "1.png", "2.png"], ["3.png", "4.png", "5.png"],
                        ["6.png", "big.png"]]
    # 25 bytes: two small files fit, the third would not; the big file goes alone.
    by_size = [len(c) for c in chunked(files, max_files=100, max_bytes=25)]
    assert by_size == [2, 2, 2, 1, 1]


def test_result_names_map_back_to_local_paths_in_upload_order(tmp_path):
    touch(tmp_path / "left" / "1.png")
    touch(tmp_path / "right" / "1.png")
    make_zip(tmp_path / "more.zip", {"1.png": b"1", "2.png": b"2"})
    files, _ = collect_files([tmp_path / "left", tmp_path / "right", tmp_path / "more.zip"])
    paths = PathMap(files)

    base = tmp_path.as_posix()
    assert paths.local_path("1.png") == f"{base}/left/1.png"
    assert paths.local_path("1.png") == f"{base}/right/1.png"
    assert paths.local_path("1.png") == f"{base}/more.zip/1.png"
    assert paths.local_path("more.zip/2.png") == f"{base}/more.zip/2.png"
    assert paths.local_path("unknown.png") == "unknown.png"


def test_runs_of_plain_files_travel_packed_in_zips_in_upload_order(tmp_path):
    from cli.client_cmds import _opened

    touch(tmp_path / "left" / "1.png", b"one")
    touch(tmp_path / "right" / "1.png", b"two")
    theirs = make_zip(tmp_path / "theirs.zip", {"3.png": b"three"})
    hidden = touch(tmp_path / ".4.png", b"four")  # named, so sent; a zip would hide it
    last = touch(tmp_path / "5.png", b"five")
    files, _ = collect_files([tmp_path / "left", tmp_path / "right", theirs, hidden, last])

    with _opened(files) as uploads:
        assert [name for name, _, _ in uploads] == [
            "upload.zip", "theirs.zip", ".4.png", "upload.zip"]
        packed = [zipfile.ZipFile(uploads[i][1]) for i in (0, 3)]
        assert [[(m.filename, z.read(m)) for m in z.infolist()] for z in packed] == [
            [("1.png", b"one"), ("1.png", b"two")], [("5.png", b"five")]]
        assert packed[0].infolist()[0].compress_type == zipfile.ZIP_STORED


def test_csv_rows_end_with_the_review_flag_then_the_text(tmp_path):
    from cli.client_cmds import CSV_COLUMNS, result_rows, write_csv

    class Results:
        def iter_results(self, job_id):
            yield {"filename": "a.png", "digit": 3, "confidence": 0.51, "status": "done",
                   "error": None, "needs_review": True}
            yield {"filename": "b.png", "digit": None, "confidence": None, "status": "failed",
                   "error": "corrupt: truncated", "needs_review": False}
            yield {"filename": "c.png", "digit": None, "confidence": 0.97, "status": "done",
                   "error": None, "needs_review": False, "text": "07300"}

    out = tmp_path / "out.csv"
    write_csv(out, result_rows(Results(), "job_x", PathMap([])))
    assert out.read_text().splitlines() == [
        ",".join(CSV_COLUMNS), "a.png,3,0.5100,done,,true,",
        "b.png,,,failed,corrupt: truncated,false,", "c.png,,0.9700,done,,false,07300"]
    # New columns go last: scripts that read by position keep working.
    assert CSV_COLUMNS[-2:] == ("needs_review", "text")


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path):
    from cli.client_cmds import result_rows, write_csv

    names = ["=cmd|' /C calc'!A0.png", "+1.png", "-2.png", "@x.png", "\tx.png", "\rx.png"]

    class Results:
        def iter_results(self, job_id):
            for name in names:
                yield {"filename": name, "digit": None, "confidence": None,
                       "status": "failed", "error": "=HYPERLINK(1)", "needs_review": False}

    out = tmp_path / "out.csv"
    write_csv(out, result_rows(Results(), "job_x", PathMap([])))
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == ["'" + n for n in names]
    assert {r["error"] for r in rows} == {"'=HYPERLINK(1)"}


# --- a server that is down ------------------------------------------------------------


def test_submit_to_a_server_that_is_down_is_one_line_and_a_failure(tmp_path):
    image = touch(tmp_path / "a.png")
    result = run_digits("submit", str(image), "--server", f"http://127.0.0.1:{closed_port()}",
                        "--out", str(tmp_path / "out.csv"), timeout=60)
    assert_one_line_error(result, "digits submit", "cannot reach the server")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("command", [["status", "job_x"], ["results", "job_x"],
                                     ["cancel", "job_x"]])
def test_other_commands_against_a_server_that_is_down(command):
    result = run_digits(*command, "--server", f"http://127.0.0.1:{closed_port()}", timeout=60)
    assert_one_line_error(result, f"digits {command[0]}", "cannot reach the server")


def test_submit_with_nothing_to_send_is_one_line(tmp_path):
    touch(tmp_path / "notes.txt")
    result = run_digits("submit", str(tmp_path), "--server", "http://127.0.0.1:9", timeout=60)
    assert_one_line_error(result, "no image files")


# --- against the real stack -----------------------------------------------------------


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_digits(folder: Path, start: int, n: int) -> dict[str, int]:
    """`n` MNIST test digits as PNGs under `folder/<label>/`; their local paths -> label."""
    images, labels = mnist_digits(n, start)
    expected = {}
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        path = save_png(folder / str(label) / f"{start + i:05d}.png", pixels)
        expected[path.as_posix()] = int(label)
    return expected


def png_bytes(pixels) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(255 - pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_submit_writes_a_csv_keyed_by_local_paths(live_stack, tmp_path):
    scans = tmp_path / "scans"
    expected = write_digits(scans, 0, 6)  # easy digits: 7 2 1 0 4 1
    images, labels = mnist_digits(2, 10)  # 0 and 6, inside a zip
    archive = make_zip(scans / "more" / "batch.zip",
                       {f"z{i}.png": png_bytes(p) for i, p in enumerate(images)})
    for i, label in enumerate(labels):
        expected[f"{archive.as_posix()}/z{i}.png"] = int(label)
    touch(scans / ".hidden.png", b"never sent")
    notes = touch(tmp_path / "notes.txt", b"not an image")  # named, so sent, and fails alone
    out = tmp_path / "out.csv"

    result = run_digits("submit", str(scans), str(notes), "--server", live_stack.url,
                        "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert "succeeded: 9 images" in result.stdout
    assert "failed 1" in result.stdout
    rows = {row["path"]: row for row in read_csv(out)}
    assert set(rows) == {*expected, notes.as_posix()}
    for path, label in expected.items():
        assert rows[path]["status"] == "done", rows[path]
        assert int(rows[path]["digit"]) == label, rows[path]
        assert 0 < float(rows[path]["confidence"]) <= 1
    assert rows[notes.as_posix()]["status"] == "failed"
    assert "unsupported_format" in rows[notes.as_posix()]["error"]
    assert rows[notes.as_posix()]["digit"] == ""
    # needs_review, then text, came after the first five columns: they keep their place.
    with out.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
        assert header == ["path", "digit", "confidence", "status", "error", "needs_review", "text"]
    assert {row["needs_review"] for row in rows.values()} <= {"true", "false"}
    assert rows[notes.as_posix()]["needs_review"] == "false"


def test_uploads_in_several_requests_make_one_job(live_stack, tmp_path):
    from cli.client import Client
    from cli.client_cmds import result_rows, upload, wait

    expected = write_digits(tmp_path, 20, 8)
    files, _ = collect_files([tmp_path])
    client = Client(live_stack.url)

    job = wait(client, upload(client, files, max_files=3))  # three requests: 3 + 3 + 2

    assert job["status"] == "succeeded" and job["counts"]["total"] == 8
    rows = list(result_rows(client, job["id"], PathMap(files)))
    assert sorted(row["path"] for row in rows) == sorted(expected)


def test_parallel_upload_streams_make_one_job_with_every_path(live_stack, tmp_path):
    """--parallel 3 with batches of two: four adds in flight at once land in one job, and
    every result maps back to its own file and digit."""
    from cli.client import Client
    from cli.client_cmds import result_rows, upload, wait

    expected = write_digits(tmp_path, 40, 8)
    files, _ = collect_files([tmp_path])
    client = Client(live_stack.url)

    job = wait(client, upload(client, files, max_files=2, parallel=3))

    assert job["status"] == "succeeded" and job["counts"]["total"] == 8
    rows = list(result_rows(client, job["id"], PathMap(files)))
    assert {row["path"]: int(row["digit"]) for row in rows} == expected


def test_repeated_names_upload_one_batch_at_a_time(tmp_path, capsys, monkeypatch):
    """Two files of one name map back by upload order, which streams in flight together
    would not keep: the client says so and sends the batches in turn."""
    import cli.client_cmds as cmds

    for folder in ("a", "b"):  # two folders named on the command line
        touch(tmp_path / folder / "same.png")
    files, _ = collect_files([tmp_path / "a", tmp_path / "b"])
    streams = []
    monkeypatch.setattr(cmds, "_send_all", lambda client, state, batches, parallel, done:
                        streams.append(parallel))

    class Server:  # the two calls around the batches
        server = "http://example.invalid"

        def create_job(self, *_, **__):
            return {"id": "job_x"}

        def seal(self, job_id):
            return {"id": job_id}

    cmds.upload(Server(), files, max_files=1, parallel=4)

    assert PathMap.has_repeats(files) and streams == [1]
    assert "some file names repeat" in capsys.readouterr().err


def test_no_wait_then_status_and_results(live_stack, tmp_path):
    expected = write_digits(tmp_path / "scans", 30, 3)
    images, _ = mnist_digits(1)
    expected[save_png(tmp_path / "scans" / "naïve 7.png", images[0]).as_posix()] = 7
    result = run_digits("submit", str(tmp_path / "scans"), "--no-wait",
                        "--server", live_stack.url, "--out", str(tmp_path / "unused.csv"))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id.startswith("job_")
    assert not (tmp_path / "unused.csv").exists()

    job = wait_until_final(live_stack.url, job_id)
    assert job["status"] == "succeeded" and job["counts"]["total"] == 4

    text = run_digits("status", job_id, "--server", live_stack.url)
    assert text.returncode == 0 and f"job {job_id}: succeeded" in text.stdout

    as_json = run_digits("results", job_id, "--format", "json", "--server", live_stack.url)
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)
    # Sent relative to the folder given: <label>/<index>.png
    assert sorted(i["filename"] for i in items) == sorted(
        Path(p).relative_to(tmp_path / "scans").as_posix() for p in expected)
    assert all(i["status"] == "done" for i in items)

    out = tmp_path / "server.csv"
    as_csv = run_digits("results", job_id, "--server", live_stack.url, "--out", str(out))
    assert as_csv.returncode == 0, as_csv.stderr
    assert sorted(row["filename"] for row in read_csv(out)) == sorted(
        i["filename"] for i in items)  # "naïve 7.png" survives the trip as UTF-8


def wait_until_final(url: str, job_id: str, deadline_s: float = 120) -> dict:
    """Poll with the real `digits status --json` until the job is final or time is up."""
    import time

    end = time.monotonic() + deadline_s
    while True:
        result = run_digits("status", job_id, "--json", "--server", url)
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < end, f"job {job_id} not final after {deadline_s} s: {job}"
        time.sleep(0.2)


def test_cancel_and_server_errors_are_one_line(live_stack, tmp_path):
    from cli.client import Client

    client = Client(live_stack.url)
    images, _ = mnist_digits(1)
    with save_png(tmp_path / "a.png", images[0]).open("rb") as fh:
        job = client.create_job([("a.png", fh, "image/png")], open_=True)
    # An open job cannot finish, so cancelling it is not a race with the workers.
    result = run_digits("cancel", job["id"], "--server", live_stack.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"job {job['id']}: cancelled"

    # Adding to a cancelled job: the server's 409 and its message, in one line.
    with (tmp_path / "a.png").open("rb") as fh, pytest.raises(UserError, match="409"):
        client.add_images(job["id"], [("a.png", fh, "image/png")])

    missing = run_digits("status", "job_doesnotexist", "--server", live_stack.url)
    assert_one_line_error(missing, "digits status", "404")


def test_a_retried_create_returns_the_same_job(live_stack, tmp_path):
    from cli.client import Client

    client = Client(live_stack.url)
    images, _ = mnist_digits(1)
    path = save_png(tmp_path / "a.png", images[0])
    ids = set()
    for _ in range(2):
        with path.open("rb") as fh:
            ids.add(client.create_job([("a.png", fh, "image/png")], open_=True,
                                      idempotency_key="test-retried-create")["id"])
    assert len(ids) == 1
    client.cancel(ids.pop())


def test_a_refused_file_fails_alone_and_the_job_goes_on(live_stack, tmp_path):
    """One batch holds a zip that would expand past the server's limit (300 MB of zeros,
    300 kB packed): the server refuses it with 413, which sending it again would not
    change. The batch is split until the zip is found; it fails alone, in the CSV, and
    the other images are classified."""
    images, _ = mnist_digits(2)
    save_png(tmp_path / "scans" / "a.png", images[0])
    save_png(tmp_path / "scans" / "c.png", images[1])
    with zipfile.ZipFile(tmp_path / "scans" / "b.zip", "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("zeros.png", "w", force_zip64=True) as member:
        for _ in range(300):
            member.write(bytes(1024 * 1024))
    out = tmp_path / "out.csv"
    result = run_digits("submit", str(tmp_path / "scans"), "--server", live_stack.url,
                        "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"a.png", "b.zip", "c.png"}
    assert rows["b.zip"]["status"] == "failed" and "413" in rows["b.zip"]["error"]
    assert rows["a.png"]["status"] == rows["c.png"]["status"] == "done"
    assert "1 file(s) refused by the server" in result.stdout
    assert not (tmp_path / "out.csv.submit.json").exists()


@pytest.mark.slow
def test_a_thousand_mnist_digits_end_to_end(live_stack, tmp_path):
    """The issue's acceptance test: 1,000 test digits as PNGs, through `digits submit`,
    give 1,000 results, at least 99% of them correct."""
    expected = write_digits(tmp_path / "scans", 0, 1000)
    out = tmp_path / "results.csv"

    result = run_digits("submit", str(tmp_path / "scans"), "--server", live_stack.url,
                        "--out", str(out), timeout=600)

    assert result.returncode == 0, result.stderr
    rows = read_csv(out)
    assert len(rows) == 1000
    assert {row["path"] for row in rows} == set(expected)
    correct = sum(row["digit"] != "" and int(row["digit"]) == expected[row["path"]]
                  for row in rows)
    assert correct >= 990, f"{correct} of 1000 correct"


def test_resuming_a_cancelled_job_drops_the_state_and_says_so(live_stack, tmp_path):
    from cli.client_cmds import SubmitState, collect_files, state_path

    images, _ = mnist_digits(2)
    save_png(tmp_path / "scans" / "a.png", images[0])
    save_png(tmp_path / "scans" / "b.png", images[1])
    out = tmp_path / "out.csv"
    job = live_stack.post("/api/v1/jobs", data={"open": "true"}).json()
    live_stack.post(f"/api/v1/jobs/{job['id']}/cancel")
    files, _ = collect_files([tmp_path / "scans"])
    state = SubmitState.load_or_new(state_path(out), live_stack.url, files)
    state.job_id = job["id"]  # as an interrupted run against that job left it
    state.save()
    result = run_digits("submit", str(tmp_path / "scans"), "--server", live_stack.url,
                        "--out", str(out))
    assert result.returncode not in (0, 1) and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after "resuming job ..." and its id
    assert "409" in last and "is cancelled" in last
    assert "saved state of this submission is dropped" in last
    assert not state_path(out).exists()
    again = run_digits("submit", str(tmp_path / "scans"), "--server", live_stack.url,
                       "--out", str(out))
    assert again.returncode == 0, again.stderr
