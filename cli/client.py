"""A small HTTP client for the digits API, used by `digits submit/status/results/cancel`.

Only `requests` and the standard library: `cli.main` imports every command module at
start-up, so nothing here may pull in torch or flask. Every failure a user can meet
(server down, timeout, an error answer) becomes a `UserError` with a one-line message,
which `cli.main` prints without a traceback.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import requests

from cli.main import UserError

# One file to upload: (filename the server will store, open binary file, content type).
Upload = tuple[str, BinaryIO, str]

# How often, and after how long, a GET (or a create with an idempotency key) is tried
# again after a connection error: 0.5 s, 1 s, 2 s.
RETRIES = 3
BACKOFF_S = 0.5


class Client:
    """The API's endpoints as methods that return the decoded JSON."""

    def __init__(self, server: str, timeout: float = 60.0, retries: int = RETRIES) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()

    # --- jobs -------------------------------------------------------------------

    def create_job(self, files: Sequence[Upload], open_: bool = True,
                   idempotency_key: str | None = None) -> dict:
        """A new job holding `files`; `open_` keeps it taking more images until `seal`.
        The idempotency key makes a retried create return the same job, so it is safe
        to retry after a connection error."""
        key = idempotency_key or str(uuid.uuid4())
        return self._request(
            "POST", "/api/v1/jobs",
            files=[("files", f) for f in files],
            data={"open": "true"} if open_ else {},
            headers={"Idempotency-Key": key},
            retry=True,
        )

    def add_images(self, job_id: str, files: Sequence[Upload]) -> dict:
        """Add `files` to an open job. Not retried: a retry could add the images twice."""
        return self._request("POST", f"/api/v1/jobs/{job_id}/images",
                             files=[("files", f) for f in files])

    def seal(self, job_id: str) -> dict:
        return self._request("POST", f"/api/v1/jobs/{job_id}/seal")

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/api/v1/jobs/{job_id}/cancel")

    def get_job(self, job_id: str) -> dict:
        return self._request("GET", f"/api/v1/jobs/{job_id}", retry=True)

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
        """One request, tried again with backoff on connection errors when `retry` is set;
        every failure ends as a one-line `UserError`."""
        url = self.server + path
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.ConnectionError:
                if attempt + 1 < attempts:
                    _rewind(kwargs.get("files"))
                    time.sleep(BACKOFF_S * 2**attempt)
                    continue
                raise UserError(f"cannot reach the server at {self.server} "
                                "(is it running? `digits up` starts one)") from None
            except requests.Timeout:
                raise UserError(f"the server at {self.server} did not answer {method} {path} "
                                f"within {self.timeout:g} s") from None
            except requests.RequestException as exc:
                raise UserError(f"request to {url} failed: {_one_line(str(exc))}") from None
            if response.status_code >= 400:
                raise UserError(_error_message(response))
            return response
        raise AssertionError("unreachable")  # the loop returns or raises


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
