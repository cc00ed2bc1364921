"""gunicorn settings that a command line cannot give (`digits api` passes
`-c python:api.gunicorn_conf`): gunicorn's own log lines in the service's format, and
the metrics subfolder of the API removed when gunicorn stops.

Requests are logged by the app itself (api/observability.py: one line each, with the
request id), so gunicorn's access log stays off, and its logger skips the access line
altogether: with a logging config given, gunicorn builds every line's fields before
its logger drops it, 6 % of the API's time on /predict (py-spy).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from gunicorn.glogging import Logger

from shared import logs, metricsdir
from shared.settings import get_settings

_format = get_settings().log_format
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"digits": {"()": logs.JsonFormatter if _format == "json"
                              else logs.TextFormatter}},
    "filters": {"ids": {"()": logs.ContextFilter}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "digits",
                            "filters": ["ids"], "stream": "ext://sys.stderr"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
    "root": {"handlers": [], "level": "WARNING"},
}


class _NoAccessLog(Logger):
    def access(self, resp, req, environ, request_time) -> None:
        """The app logs each request itself (api/observability.py)."""


logger_class = _NoAccessLog


def post_worker_init(_worker) -> None:
    """Once the app is loaded: its objects (modules, the app, SQLAlchemy's and Celery's
    state) go to the collector's permanent generation. A full collection walked all of
    them: 65-80 ms with the event loop held, four times during one bulk upload, and
    every /predict call in the process waited (docs/scaling.md)."""
    gc.freeze()


def on_exit(_server) -> None:
    own = os.environ.get(metricsdir.ENV)
    if own:
        metricsdir.discard(Path(own))
