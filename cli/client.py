"""A small HTTP client for the digits API, used by `digits submit/status/results/cancel`.

Only `requests` and the standard library: `cli.main` imports every command module at
start-up, so nothing here may pull in torch or flask. Every failure a user can meet
(server down, timeout, an error answer) becomes a `UserError` with a one-line message,
which `cli.main` prints without a traceback.
"""

from __future__ import annotations

import email.utils
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import requests

from cli.main import UserError

# One file to upload: (filename the server will store, open binary file, content type).
Upload = tuple[str, BinaryIO, str]

# Backoff between tries: 0.5 s, 1 s, 2 s ... up to 30 s, with jitter, or what the
# server's Retry-After asks for; for at most the retry budget (DIGITS_CLIENT_RETRY_MINUTES).
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
# Answers worth trying again: too many requests, and any server-side error. A 4xx other
# than 429 (400, 404, 409, 413) would get the same answer again.
RETRY_STATUSES = frozenset({429, *range(500, 600)})


class HttpError(UserError):
    """The server answered with an error status that trying again would not change."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    """One failed try worth repeating; `what` says what happened, in words."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class Client:
    """The API's endpoints as methods that return the decoded JSON."""

    def __init__(self, server: str, timeout: float = 60.0,
                 retry_minutes: float | None = None, quiet: bool = False) -> None:
        if retry_minutes is None:
            from shared.settings import get_settings

            retry_minutes = get_settings().client_retry_minutes
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.retry_s = retry_minutes * 60
        self.quiet = quiet  # no "retrying" lines on stderr
        self.reached = False  # has the server answered anything yet?
        self.session = requests.Session()
        # An API key (DIGITS_API_KEY, or --api-key, which sets it) goes with every call;
        # it is never printed: errors name the server and the status only.
        api_key = os.environ.get("DIGITS_API_KEY", "").strip()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def fork(self) -> Client:
        """A client like this one with its own connection pool, for another thread."""
        other = Client(self.server, self.timeout, self.retry_s / 60, self.quiet)
        other.session.headers.update(self.session.headers)
        return other

    # --- jobs -------------------------------------------------------------------

    def create_job(self, files: Sequence[Upload], open_: bool = True,
                   idempotency_key: str | None = None, mode: str = "digit") -> dict:
        """A new job holding `files`; `open_` keeps it taking more images until `seal`;
        `mode` "string" reads each image as a field of digits. The idempotency key makes
        a retried create return the same job, so it is safe to retry after a connection
        error."""
        key = idempotency_key or str(uuid.uuid4())
        data = {"open": "true"} if open_ else {}
        if mode != "digit":
            data["mode"] = mode
        return self._request(
            "POST", "/api/v1/jobs",
            files=[("files", f) for f in files],
            data=data,
            headers={"Idempotency-Key": key},
            retry=True,
        )

    def add_images(self, job_id: str, files: Sequence[Upload],
                   idempotency_key: str | None = None) -> dict:
        """Add `files` to an open job. The key (one per batch) makes a retried add land
        once, so it is retried like everything else."""
        key = idempotency_key or str(uuid.uuid4())
        return self._request("POST", f"/api/v1/jobs/{job_id}/images",
                             files=[("files", f) for f in files],
                             headers={"Idempotency-Key": key}, retry=True)

    def seal(self, job_id: str) -> dict:
        return self._request("POST", f"/api/v1/jobs/{job_id}/seal", retry=True)

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/api/v1/jobs/{job_id}/cancel", retry=True)

    def get_job(self, job_id: str) -> dict:
        return self._request("GET", f"/api/v1/jobs/{job_id}", retry=True)

    def delete_job(self, job_id: str) -> dict:
        """Delete a job and everything it stored (retried: deleting twice is a 404)."""
        return self._request("DELETE", f"/api/v1/jobs/{job_id}", retry=True)

    def status(self, minutes: int = 10) -> dict:
        """The service's overview: workers, queues, pending images, images per second."""
        return self._request("GET", "/api/v1/status", params={"minutes": minutes}, retry=True)

    def iter_results(self, job_id: str, page_size: int = 500, status: str | None = None,
                     needs_review: bool | None = None) -> Iterator[dict]:
        """Every result item of a job, following the cursor from page to page."""
        params: dict[str, Any] = {"limit": page_size}
        if status:
            params["status"] = status
        if needs_review is not None:
            params["needs_review"] = "true" if needs_review else "false"
        while True:
            page = self._request("GET", f"/api/v1/jobs/{job_id}/results",
                                 params=params, retry=True)
            yield from page["data"]
            if not page.get("has_more") or not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def results_csv(self, job_id: str) -> Iterator[str]:
        """The server's own CSV of every result of a job, streamed in pieces: a job can
        hold more results than are worth keeping in memory at once."""
        response = self._send("GET", f"/api/v1/jobs/{job_id}/results",
                              params={"format": "csv"}, retry=True, stream=True)
        if "charset" not in response.headers.get("Content-Type", ""):
            response.encoding = "utf-8"  # requests would guess Latin-1 for text/csv
        with response:
            try:
                yield from response.iter_content(chunk_size=64 * 1024, decode_unicode=True)
            except requests.RequestException as exc:
                raise UserError(f"the CSV of job {job_id} broke off: "
                                f"{_one_line(str(exc))}") from None

    # --- plumbing ---------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> dict:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise UserError(f"the server at {self.server} answered {method} {path} "
                            "with something that is not JSON") from None

    def _send(self, method: str, path: str, retry: bool = False,
              **kwargs: Any) -> requests.Response:
        """One request; with `retry`, tried again with backoff through connection errors,
        429 and 5xx answers (honouring Retry-After) for at most the retry budget. Every
        failure ends as a one-line `UserError` that says what happened."""
        import tenacity

        where = f"{method} {path}"
        if not retry:
            try:
                return self._try(method, path, **kwargs)
            except _Transient as exc:
                raise UserError(exc.what) from None
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=tenacity.stop_before_delay(self.retry_s),
            wait=_wait, reraise=True, sleep=time.sleep,
            before_sleep=self._say_retrying)
        try:
            for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        _rewind(kwargs.get("files"))
                    return self._try(method, path, **kwargs)
        except _Transient as exc:
            minutes = self.retry_s / 60
            raise UserError(f"gave up on {where} after {minutes:g} min of retries: "
                            f"{exc.what}") from None
        raise AssertionError("unreachable")  # tenacity returns or raises

    def _say_retrying(self, state) -> None:
        if self.quiet or state.outcome is None:
            return
        exc = state.outcome.exception()
        wait = state.upcoming_sleep
        print(f"retrying in {wait:.1f} s: {exc}", file=sys.stderr)

    def _try(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One try: the answer, a `_Transient` worth repeating, or a `UserError`."""
        url = self.server + path
        where = f"{method} {path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            if not self.reached and _refused(exc):
                # Nothing has ever answered at this address: a wrong address or a server
                # that is not started, not an outage worth minutes of retries.
                raise UserError(f"cannot reach the server at {self.server}: connection "
                                "refused (is it running? `digits up` starts one)") from None
            raise _Transient(_connection_trouble(exc, self.server, where)) from None
        except requests.Timeout:
            raise _Transient(f"the server at {self.server} did not answer {where} "
                             f"within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise UserError(f"request to {url} failed: {_one_line(str(exc))}") from None
        self.reached = True
        if response.status_code in RETRY_STATUSES:
            raise _Transient(_error_message(response), _retry_after(response))
        if response.status_code >= 400:
            raise HttpError(_error_message(response), response.status_code)
        return response


def _wait(state) -> float:
    """Exponential backoff with jitter, or longer when the server asked for it."""
    backoff = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (state.attempt_number - 1))
    backoff *= random.uniform(0.5, 1.0)
    exc = state.outcome.exception() if state.outcome else None
    asked = getattr(exc, "retry_after", None)
    return max(backoff, asked) if asked is not None else backoff


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds (a number, or an HTTP date), at most 10 minutes."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), 600.0)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it: requests wraps urllib3, which wraps OS
    errors, in args as well as in __cause__/__context__."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__, getattr(e, "reason", None),
                                *e.args) if isinstance(x, BaseException))


def _refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in _causes(exc))


def _connection_trouble(exc: BaseException, server: str, where: str) -> str:
    """What happened to the connection, in words."""
    import http.client

    causes = list(_causes(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return f"the server at {server} refused the connection for {where} (restarting?)"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in causes):
        return f"the connection to {server} was reset during {where}"
    if any(isinstance(e, http.client.RemoteDisconnected) for e in causes):
        return f"the server at {server} closed the connection before answering {where}"
    return f"the connection to {server} failed during {where}: {_one_line(str(exc), 160)}"


def _rewind(files: list[tuple[str, Upload]] | None) -> None:
    """Put every file to upload back at its start, so a retried request sends it whole."""
    for _field, (_name, fh, _type) in files or ():
        fh.seek(0)


def _error_message(response: requests.Response) -> str:
    """One line from an error answer: the server's JSON message when it sent one."""
    where = f"{response.request.method} {response.request.path_url}"
    message = ""
    try:
        error = response.json().get("error", {})
        message = error.get("message") or error.get("code") or ""
    except (ValueError, AttributeError):
        message = response.text
    message = _one_line(message) or response.reason or "no details"
    return f"the server answered {where} with {response.status_code}: {message}"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
