"""Logs for every digits process: text, or JSON lines with DIGITS_LOG_FORMAT=json.

Each record carries the request id and the job id in scope, when there are some. The
API takes the request id from `X-Request-ID` (or makes one) for each request; tasks
carry it, and the job id, in their message headers (shared.celery_app), and the
worker puts them back in scope while it runs the task. Both live in context
variables, so greenlets and threads (gunicorn's gevent or gthread workers, a pool)
never see each other's.

Secrets stay out: passwords in URLs, bearer tokens and the metrics token are masked
in every message, and nothing logs request headers or bodies.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "digits_request_id", default=None)
JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "digits_job_id", default=None)

# Message headers of a task (shared.celery_app adds them when it sends one).
TASK_REQUEST_ID = "digits_request_id"
TASK_JOB_ID = "digits_job_id"

# A request id from a client is kept when it is short and plain; anything else is
# replaced, so that a header cannot forge log lines or fill them.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def new_request_id() -> str:
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


def plain(value: str | None) -> str | None:
    """The value when it is a short plain id, else None."""
    return value if value and _PLAIN_ID.match(value) else None


def request_id_from(header: str | None) -> str:
    return plain(header) or new_request_id()


@contextmanager
def scope(request_id: str | None = None, job_id: str | None = None) -> Iterator[None]:
    """Put ids in scope for the records logged inside the block."""
    tokens = bind(request_id, job_id)
    try:
        yield
    finally:
        unbind(tokens)


def bind(request_id: str | None = None, job_id: str | None = None) -> list:
    tokens = []
    if request_id is not None:
        tokens.append(REQUEST_ID.set(request_id))
    if job_id is not None:
        tokens.append(JOB_ID.set(job_id))
    return tokens


def unbind(tokens: list) -> None:
    for token in reversed(tokens):
        token.var.reset(token)


# --- secrets -------------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@/\s]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
# An API key (shared.accounts: "dgt_" and 43 url-safe characters) wherever it appears.
_API_KEY = re.compile(r"\bdgt_[A-Za-z0-9_-]{16,}")
_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """A value (a token, a password) that must never appear in a log line."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _API_KEY.sub("dgt_***", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


# --- formatting ----------------------------------------------------------------------

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "request_id", "job_id", "taskName"}


def _install_record_factory() -> None:
    """Every record gets the ids in scope as it is made, whichever handler takes it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_digits", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        record.job_id = JOB_ID.get()
        return record

    factory._digits = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `job_id` to every record (from `extra=`, else from scope)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = JOB_ID.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, pid, the ids in
    scope, and the fields given with `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _timestamp(record), "level": record.levelname.lower(),
               "logger": record.name, "message": redact(record.getMessage()),
               "pid": record.process}
        for key in ("request_id", "job_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL [pid] logger: message request_id=... job_id=...`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{key}={getattr(record, key)}" for key in ("request_id", "job_id")
               if getattr(record, key, None) is not None]
        return redact(f"{line} {' '.join(ids)}" if ids else line)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str | None = None, level: int | str = logging.INFO) -> None:
    """Give the root logger one stderr handler with the chosen format (once per process;
    again changes its format). Leaves alone a root logger that someone else set up (a
    test runner's)."""
    from shared.settings import get_settings

    settings = get_settings()
    log_format = log_format or settings.log_format
    if settings.metrics_token is not None:
        add_secret(settings.metrics_token.get_secret_value())
    _install_record_factory()
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_digits", False)]
    if ours:
        handler = ours[0]
    elif root.handlers:
        return
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler._digits = True  # type: ignore[attr-defined]
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # warnings become records in the same format
