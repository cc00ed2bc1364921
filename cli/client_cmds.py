"""`digits submit`, `status`, `results` and `cancel`: the client side of the service.

`submit` walks files, folders and zip archives, uploads them in chunks into one job,
waits for the workers with a progress bar, and writes a CSV keyed by the local path
of each image. Heavy or slow imports (requests, tqdm) stay inside the functions:
`cli.main` imports this module on every `digits` start.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import mimetypes
import os
import sys
import threading
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cli.main import UserError
from shared import csvsafe
from shared.formats import skipped_in_zip

DEFAULT_SERVER = "http://127.0.0.1:8000"
# Flask caps the parts of one multipart request (MAX_FORM_PARTS) and its size
# (MAX_CONTENT_LENGTH), so a big folder goes up in several requests of this size.
CHUNK_FILES = 500
CHUNK_BYTES = 32 * 1024 * 1024
POLL_S = 0.25
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
# Inside a folder, only files with these suffixes are sent; a file named on the
# command line is always sent, and the server says why if it is not an image.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# New columns go last: scripts that read the CSV by position keep working.
CSV_COLUMNS = ("path", "digit", "confidence", "status", "error", "needs_review", "text")


def register(sub) -> None:
    server_help = f"API address (env DIGITS_SERVER, default {DEFAULT_SERVER})"

    p = sub.add_parser("submit", help="classify image files, folders and zip archives in bulk")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="image files, folders (searched recursively) and .zip archives")
    p.add_argument("--server", default=_default_server(), help=server_help)
    p.add_argument("--out", type=Path, default=Path("results.csv"),
                   help="CSV to write: path, digit, confidence, status, error, needs_review, "
                        "text")
    p.add_argument("--mode", choices=["digit", "string"], default="digit",
                   help="digit: each image one digit; string: each image a field of digits "
                        "(a postal code, an amount, a date) read whole, into the text column")
    p.add_argument("--no-wait", action="store_true",
                   help="print the job id once everything is uploaded, and exit")
    p.add_argument("--resume", metavar="JOB", default=None,
                   help="carry on an interrupted submission of the same paths into JOB (a "
                        "rerun with the same --out finds it by itself, from OUT.submit.json)")
    p.add_argument("--retry-minutes", type=float, default=None,
                   help="how long to keep retrying one request through connection errors, "
                        "429 and 5xx (env DIGITS_CLIENT_RETRY_MINUTES, default 10)")
    p.add_argument("--parallel", type=int, default=1, metavar="K",
                   help="upload streams: K batches in flight at once, for a server with "
                        "several API processes (default 1)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's status and counts; without a job id, the "
                                      "service's: workers, queues, pending images, images/s")
    p.add_argument("job", nargs="?", help="job id (job_...); leave out for the overview")
    p.add_argument("--server", default=_default_server(), help=server_help)
    p.add_argument("--json", action="store_true", help="print the job or overview as JSON")
    p.add_argument("--minutes", type=int, default=10,
                   help="overview: the images/s history to show (1-60 minutes)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("results", help="a job's results as CSV or JSON")
    p.add_argument("job", help="job id (job_...)")
    p.add_argument("--server", default=_default_server(), help=server_help)
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("cancel", help="cancel a job's unfinished images")
    p.add_argument("job", help="job id (job_...)")
    p.add_argument("--server", default=_default_server(), help=server_help)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("delete", help="delete a job with its images and results "
                                      "(cancelled first if running)")
    p.add_argument("job", help="job id (job_...)")
    p.add_argument("--server", default=_default_server(), help=server_help)
    p.set_defaults(func=cmd_delete)


def _default_server() -> str:
    return os.environ.get("DIGITS_SERVER") or DEFAULT_SERVER


# --- finding the files ------------------------------------------------------------


@dataclass(slots=True)  # one per file: a folder of 100,000 scans is as many of these
class LocalFile:
    """One file to upload: where it is here, and the name the server stores it under."""

    path: Path
    name: str  # the multipart filename: relative to the folder given, or the file's name
    size: int
    # For a readable zip archive: the names of the members the server turns into items.
    # None for anything else (a broken .zip is sent as it is and fails on its own).
    members: list[str] | None = None

    @property
    def is_zip(self) -> bool:
        return self.members is not None


def collect_files(paths: Iterable[Path]) -> tuple[list[LocalFile], int]:
    """The files to upload, in a stable order, and how many non-image files inside the
    folders were left out. Hidden files and folders (a name starting with '.') are
    skipped; a folder is searched recursively."""
    found: list[LocalFile] = []
    skipped = 0
    for path in paths:
        if path.is_dir():
            for file in _walk(path):
                if file.suffix.lower() in IMAGE_SUFFIXES or file.suffix.lower() == ".zip":
                    found.append(_local_file(file, file.relative_to(path).as_posix()))
                else:
                    skipped += 1
        elif path.is_file():
            found.append(_local_file(path, path.name))
        else:
            raise UserError(f"{path}: no such file or folder")
    return found, skipped


def _walk(folder: Path) -> Iterator[Path]:
    """Every non-hidden file under `folder`, sorted so that uploads are reproducible."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _local_file(path: Path, name: str) -> LocalFile:
    members = _zip_members(path) if path.suffix.lower() == ".zip" else None
    return LocalFile(path=path, name=name, size=path.stat().st_size, members=members)


def _zip_members(path: Path) -> list[str] | None:
    """The members the server will make items of: like the server, leave out folders,
    hidden files and macOS resource forks. None when `path` is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [info.filename for info in archive.infolist()
                    if not skipped_in_zip(info.filename)]
    except (zipfile.BadZipFile, OSError):
        return None


def chunked(files: list[LocalFile], max_files: int = CHUNK_FILES,
            max_bytes: int = CHUNK_BYTES) -> Iterator[list[LocalFile]]:
    """Consecutive groups of at most `max_files` files and `max_bytes` bytes (a single
    file bigger than that goes alone; the server says if it is too big)."""
    chunk: list[LocalFile] = []
    size = 0
    for file in files:
        if chunk and (len(chunk) >= max_files or size + file.size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(file)
        size += file.size
    if chunk:
        yield chunk


class PathMap:
    """Maps the filename of each result item back to the local path it came from.

    The server names an item after the multipart filename, or after the member's name
    for an image inside a zip. Two sources can give the same name (the same relative
    path in two folders, or in two zips); items get ids in upload order, so each name
    keeps a queue of local paths and results, read in id order, take them in turn."""

    def __init__(self, files: Iterable[LocalFile]) -> None:
        # A name's one path as a string; a queue only for names that repeat (a deque a
        # file was most of the client's memory on a 100,000-image job).
        self._paths: dict[str, str | deque[str]] = {}
        for file in files:
            if file.is_zip:
                for member in file.members:
                    local = f"{file.path.as_posix()}/{member}"
                    # Whether the server prefixes the archive's name or not, find it.
                    self._add(member, local)
                    self._add(f"{file.name}/{member}", local)
            else:
                self._add(file.name, file.path.as_posix())

    @staticmethod
    def has_repeats(files: Iterable[LocalFile]) -> bool:
        """Whether two of the files (or zip members) would reach the server by one name."""
        seen: set[str] = set()
        for file in files:
            for name in (file.members if file.is_zip else [file.name]):
                if name in seen:
                    return True
                seen.add(name)
        return False

    def _add(self, name: str, local: str) -> None:
        found = self._paths.get(name)
        if found is None:
            self._paths[name] = local
        elif isinstance(found, deque):
            found.append(local)
        else:
            self._paths[name] = deque((found, local))

    def local_path(self, filename: str) -> str:
        found = self._paths.get(filename)
        if isinstance(found, deque):
            return found.popleft() if found else filename
        if found is None:
            return filename
        del self._paths[filename]  # taken: a second result of this name has no path here
        return found


# --- the commands -----------------------------------------------------------------


def cmd_submit(args) -> int:
    from cli.client import Client

    files, skipped = collect_files(args.paths)
    left_out = f"left out {skipped} file(s) that are not images or zip archives"
    if not files:
        raise UserError("no image files or zip archives found in the paths given"
                        + (f" ({left_out})" if skipped else ""))
    if skipped:
        print(left_out, file=sys.stderr)
    client = Client(args.server, retry_minutes=args.retry_minutes)
    started = time.monotonic()
    state = SubmitState.load_or_new(state_path(args.out), args.server, files, args.resume)
    try:
        job = upload(client, files, state=state, mode=args.mode, parallel=args.parallel)
    except KeyboardInterrupt:
        print(f"interrupted: job {state.job_id or '(not created yet)'} is left open; "
              "run the same command again to carry on", file=sys.stderr)
        return 130
    except UserError as exc:
        if state.job_id is None:
            raise
        if getattr(exc, "status", None) in (404, 409):
            # The job is gone, cancelled, sealed or expired: nothing to carry on with.
            state.remove()
            raise UserError(f"{exc} (the saved state of this submission is dropped: run "
                            "the same command again to start a new job)") from None
        raise UserError(f"{exc} (job {state.job_id} is left open: run the same command "
                        f"again, or add --resume {state.job_id}, to carry on)") from None
    if args.no_wait:
        state.remove()
        print(job["id"])
        return 0
    try:
        job = wait(client, job)
    except KeyboardInterrupt:
        print(f"interrupted: job {job['id']} is sealed and goes on; run the same command "
              "again to wait for it and write the CSV", file=sys.stderr)
        return 130
    # Streamed: a page of results at a time from the API to the file, whatever the job's size.
    written = write_csv(args.out, itertools.chain(
        result_rows(client, job["id"], PathMap(files)), state.refused_rows()))
    state.remove()
    print(summary(job, time.monotonic() - started))
    if state.refused:
        print(f"  {len(state.refused)} file(s) refused by the server, not sent: "
              "see the error column")
    print(f"wrote {written} results to {args.out}")
    return 0 if job["status"] == "succeeded" else 1


def state_path(out: Path) -> Path:
    """The submission's state, beside the CSV it will write."""
    return out.with_name(out.name + ".submit.json")


def _fingerprint(files: Iterable[LocalFile]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.path.as_posix()}\0{file.size}\0".encode())
    return digest.hexdigest()[:32]


@dataclass
class SubmitState:
    """What a submission has done, kept in a small JSON file beside the CSV so that a
    rerun after Ctrl-C, a crash or a reboot carries on: the job, the batches that the
    server acknowledged, the files it refused, whether the job is sealed. Each batch's
    Idempotency-Key comes from the job and the batch's files, so a batch whose answer was
    lost (sent, but not written down here) lands once when it is sent again."""

    path: Path | None
    server: str
    fingerprint: str
    job_id: str | None = None
    sent: set[str] = field(default_factory=set)  # keys of the batches acknowledged
    refused: dict[str, str] = field(default_factory=dict)  # local path -> why refused
    sealed: bool = False
    # Upload streams (--parallel) write down their batches one at a time.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load_or_new(cls, path: Path | None, server: str, files: list[LocalFile],
                    resume: str | None = None) -> SubmitState:
        fingerprint = _fingerprint(files)
        state = cls(path, server, fingerprint, job_id=resume)
        if path is None or not path.exists():
            return state
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return state
        same = (saved.get("fingerprint") == fingerprint
                and saved.get("server") == server
                and (resume is None or saved.get("job_id") == resume))
        if not same:
            if resume is None:
                print(f"{path} is for other files or another server: starting a new job",
                      file=sys.stderr)
            return state
        state = cls(path, server, fingerprint, saved.get("job_id"), set(saved.get("sent", [])),
                    dict(saved.get("refused", {})), bool(saved.get("sealed")))
        print(f"resuming job {state.job_id}: {len(state.sent)} batch(es) already sent",
              file=sys.stderr)
        return state

    def save(self) -> None:
        if self.path is None:
            return
        body = {"server": self.server, "fingerprint": self.fingerprint, "job_id": self.job_id,
                "sent": sorted(self.sent), "refused": self.refused, "sealed": self.sealed}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(body), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror}") from None

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def refused_rows(self) -> list[dict]:
        return [{"path": path, "digit": "", "confidence": "", "status": "failed",
                 "error": why, "needs_review": "false"} for path, why in self.refused.items()]


def batch_key(job_id: str, batch: list[LocalFile]) -> str:
    """The Idempotency-Key of one batch: the same files into the same job, the same key."""
    return f"{job_id}.{_fingerprint(batch)}"


def upload(client, files: list[LocalFile], max_files: int = CHUNK_FILES,
           max_bytes: int = CHUNK_BYTES, state: SubmitState | None = None,
           mode: str = "digit", parallel: int = 1) -> dict:
    """Create one open job, add the files batch by batch (`parallel` batches in flight),
    then seal it; each step is written down in `state` as it is acknowledged, so that a
    rerun carries on. A batch the server refuses as bad (400) or too big (413) is split
    until the files to blame are found; those fail alone, the job goes on."""
    from tqdm import tqdm

    if state is None:
        state = SubmitState(None, client.server, _fingerprint(files))
    if state.job_id is None:
        job = client.create_job([], open_=True, idempotency_key=f"create.{uuid4_hex()}",
                                mode=mode)
        state.job_id = job["id"]
        state.save()
    # Printed early so that an interrupted submission can be picked up later.
    print(f"job {state.job_id}", file=sys.stderr)
    if state.sealed:
        return client.get_job(state.job_id)
    batches = list(chunked(files, max_files, max_bytes))
    todo = [b for b in batches if batch_key(state.job_id, b) not in state.sent]
    if parallel > 1 and PathMap.has_repeats(files):
        # Results find their local paths by upload order among files of one name, and
        # batches in flight together land in any order.
        print("some file names repeat: uploading one batch at a time", file=sys.stderr)
        parallel = 1
    with tqdm(total=len(files), unit="file", desc="upload", disable=None) as bar:
        bar.update(len(files) - sum(len(b) for b in todo))
        _send_all(client, state, todo, parallel, bar.update)
    job = client.seal(state.job_id)
    state.sealed = True
    state.save()
    return job


def _send_all(client, state: SubmitState, batches: list[list[LocalFile]], parallel: int,
              done) -> None:
    if parallel <= 1:
        for batch in batches:
            _send_batch(client, state, batch)
            done(len(batch))
        return
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    local = threading.local()

    def send(batch: list[LocalFile]) -> None:
        if not hasattr(local, "client"):  # a connection pool of its own per stream
            local.client = client.fork()
        _send_batch(local.client, state, batch)
        done(len(batch))

    pool = ThreadPoolExecutor(parallel, thread_name_prefix="upload")
    try:
        futures = [pool.submit(send, batch) for batch in batches]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in finished:
            future.result()  # the first failure, if any, as it was raised
    finally:
        # On a failure or Ctrl-C the batches not started stay unsent (a rerun sends them).
        pool.shutdown(wait=True, cancel_futures=True)


def uuid4_hex() -> str:
    import uuid

    return uuid.uuid4().hex


def _send_batch(client, state: SubmitState, batch: list[LocalFile]) -> None:
    from cli.client import HttpError

    key = batch_key(state.job_id, batch)
    try:
        with _opened(batch) as uploads:
            client.add_images(state.job_id, uploads, idempotency_key=key)
    except HttpError as exc:
        if exc.status not in (400, 413):
            raise
        if len(batch) > 1:
            half = len(batch) // 2
            _send_batch(client, state, batch[:half])
            _send_batch(client, state, batch[half:])
        else:
            with state.lock:
                state.refused[batch[0].path.as_posix()] = f"not sent: {exc}"
    with state.lock:
        state.sent.add(key)
        state.save()


@contextlib.contextmanager
def _opened(chunk: list[LocalFile]):
    """The chunk's files opened for a multipart upload, closed afterwards. Runs of plain
    files travel packed in one uncompressed zip: the server expands a zip for a fraction
    of what parsing as many multipart parts costs it, and names each item after its
    member, that is after the file's own name."""
    with contextlib.ExitStack() as stack:
        uploads, pack = [], []
        for file in chunk:
            if not file.is_zip and not skipped_in_zip(file.name):
                pack.append(file)
                continue
            if pack:
                uploads.append(_packed(pack))
                pack = []
            try:
                fh = stack.enter_context(file.path.open("rb"))
            except OSError as exc:
                raise _unreadable(file, exc) from None
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            uploads.append((file.name, fh, kind))
        if pack:
            uploads.append(_packed(pack))
        yield uploads


def _packed(files: list[LocalFile]) -> tuple[str, io.BytesIO, str]:
    """Files stored (not compressed: scans are compressed already) in one zip, in order."""
    buffer = io.BytesIO()
    stamp = time.localtime()[:6]  # one timestamp for the members: zipfile asks per member
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # two folders may hold the same name
        for file in files:
            try:
                with file.path.open("rb", buffering=0) as fh:  # read whole: no buffer needed
                    data = fh.read()
            except OSError as exc:
                raise _unreadable(file, exc) from None
            archive.writestr(zipfile.ZipInfo(file.name, stamp), data)
    buffer.seek(0)
    return ("upload.zip", buffer, "application/zip")


def _unreadable(file: LocalFile, exc: OSError) -> UserError:
    return UserError(f"{file.path}: cannot read ({exc.strerror})")


def wait(client, job: dict) -> dict:
    """Poll the job until it is final, with a progress bar over its images."""
    from tqdm import tqdm

    with tqdm(total=job["counts"]["total"], unit="img", desc="classify", disable=None) as bar:
        while True:
            counts = job["counts"]
            bar.total = counts["total"]  # zips are expanded on the server: totals may grow
            bar.update(counts["total"] - counts["pending"] - bar.n)
            if job["status"] in FINAL_STATUSES:
                return job
            time.sleep(POLL_S)
            job = client.get_job(job["id"])


def result_rows(client, job_id: str, paths: PathMap) -> Iterator[dict]:
    """One CSV row per result item, in upload order, keyed by the local path; a page of
    results is fetched as the rows before it are consumed."""
    for item in client.iter_results(job_id):
        confidence = item.get("confidence")
        yield {
            "path": paths.local_path(item["filename"]),
            "digit": "" if item.get("digit") is None else item["digit"],
            "confidence": "" if confidence is None else f"{confidence:.4f}",
            "status": item["status"],
            "error": item.get("error") or "",
            "needs_review": "true" if item.get("needs_review") else "false",  # as the API's CSV
            "text": item.get("text") or "",
        }


def write_csv(out: Path, rows: Iterable[dict]) -> int:
    """Write the rows as they come; returns how many."""
    count = 0
    try:
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for r in rows:
                # Paths and errors are text a spreadsheet must not run (shared/csvsafe.py).
                writer.writerow({k: csvsafe.cell(v) for k, v in r.items()})
                count += 1
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    return count


def summary(job: dict, elapsed_s: float) -> str:
    c = job["counts"]
    rate = c["total"] / elapsed_s if elapsed_s > 0 else 0.0
    lines = [
        f"job {job['id']} {job['status']}: {c['total']} images in {elapsed_s:.1f} s "
        f"({rate:.0f} images/s)",
        f"  done {c['done']} (no digit {c['no_digit']}), failed {c['failed']}, "
        f"needs review {c['needs_review']}"
        + (f", cancelled {c['cancelled']}" if c.get("cancelled") else ""),
    ]
    if c["failed"] and job["status"] == "succeeded":
        lines.append(f"  {c['failed']} image(s) could not be read: see the error column")
    return "\n".join(lines)


def cmd_status(args) -> int:
    from cli.client import Client

    if not args.job:
        status = Client(args.server).status(args.minutes)
        print(json.dumps(status, indent=2) if args.json else overview_text(status, args.server))
        return 0
    job = Client(args.server).get_job(args.job)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    c = job["counts"]
    print(f"job {job['id']}: {job['status']}" + (" (open: takes more images)"
                                                 if job.get("open") else ""))
    print(f"  total {c['total']}, pending {c['pending']}, done {c['done']} "
          f"(no digit {c['no_digit']}), failed {c['failed']}, "
          f"needs review {c['needs_review']}, cancelled {c.get('cancelled', 0)}")
    for key in ("created_at", "started_at", "finished_at", "model_version"):
        if job.get(key):
            print(f"  {key.replace('_', ' ')}: {job[key]}")
    return 0


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """One character a value, scaled to the largest; nothing at all is the lowest bar."""
    peak = max(values, default=0)
    if peak <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[0] if v <= 0 else SPARKS[max(1, round(v / peak * 7))]
                   for v in values)


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {round(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"


def overview_text(status: dict, server: str) -> str:
    """The status page's overview as lines for a terminal."""
    lines = [f"digits at {server}, {status['generated_at'][:19].replace('T', ' ')} UTC"]
    for part, why in (status.get("errors") or {}).items():
        lines.append(f"  {part} unreadable: {why}")
    if status.get("queues") is not None:
        lines.append("queues")
        for name, q in status["queues"].items():
            workers = f"{q['workers']} worker{'s' if q['workers'] != 1 else ''}"
            waiting = "?" if q["messages"] is None else f"{q['messages']:,}"
            lines.append(f"  {name:<12} {workers:<10} {q['processes']:>3} processes  "
                         f"{waiting:>7} waiting" + ("   <- no worker" if not q["workers"] else ""))
        lines.append(f"  in flight (delivered, not acknowledged): {status['unacked']:,}")
    if status.get("jobs") is not None:
        oldest = status.get("oldest_pending")
        waited = (f"oldest waiting {_age(oldest['age_s'])} (job {oldest['job_id']})"
                  if oldest else "none waiting")
        lines.append(f"images   {status['pending']:,} pending; {waited}")
        j = status["jobs"]
        lines.append(f"jobs     {j['running']} running, {j['queued']} queued, "
                     f"{j['succeeded']} succeeded, {j['failed']} failed, "
                     f"{j['cancelled']} cancelled")
    t = status.get("throughput")
    if t:
        rates = [p["per_s"] for p in t["points"]]
        lines.append(f"images/s {t['last_minute_per_s']:,.1f} over the last minute; "
                     f"{t['total']:,} images in the last {t['window_s'] // 60} min "
                     f"(peak {max(rates, default=0):,.1f}/s in {t['bucket_s']} s)")
        lines.append(f"  {sparkline(rates)}  now")
    return "\n".join(lines)


def cmd_results(args) -> int:
    from cli.client import Client

    client = Client(args.server)
    if args.format == "csv":
        pieces = client.results_csv(args.job)
    else:
        pieces = iter([json.dumps(list(client.iter_results(args.job)), indent=2) + "\n"])
    # The first piece comes before the file is opened: an unknown job leaves no file.
    first = next(pieces, "")
    if args.out is None:
        _write_all(sys.stdout, first, pieces)
        return 0
    try:
        with args.out.open("w", encoding="utf-8", newline="") as fh:
            _write_all(fh, first, pieces)
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror}") from None
    return 0


def _write_all(fh, first: str, rest: Iterator[str]) -> None:
    fh.write(first)
    for piece in rest:
        fh.write(piece)


def cmd_delete(args) -> int:
    from cli.client import Client

    gone = Client(args.server).delete_job(args.job)
    print(f"job {gone['id']}: deleted with its {gone['items_deleted']} image(s)")
    return 0


def cmd_cancel(args) -> int:
    from cli.client import Client

    job = Client(args.server).cancel(args.job)
    print(f"job {job['id']}: {job['status']}")
    return 0
