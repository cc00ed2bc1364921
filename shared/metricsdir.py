"""The folder where prometheus-client's multiprocess mode keeps its samples.

gunicorn and Celery's prefork pool run several processes, so every process writes its
samples to memory-mapped files (`counter_<pid>.db`, `histogram_<pid>.db`) in the
folder named by PROMETHEUS_MULTIPROC_DIR, and whoever serves the metrics merges the
files. That variable must be set before prometheus_client is imported, so this module
never imports it: the `digits api` and `digits worker` commands call `prepare()` first.

One metrics folder per host (DIGITS_METRICS_DIR, default `state_dir/metrics`). Each
service (one `digits api` with its gunicorn processes, one `digits worker` with its
pool) takes its own subfolder, `<service>-<pid>`, emptied as it starts, and removes the
subfolders of services that are no longer running: nothing from an earlier run is
counted again, and no running service loses its samples to another one's start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from shared.settings import Settings, get_settings

ENV = "PROMETHEUS_MULTIPROC_DIR"
_SUBFOLDER = re.compile(r"^[a-z-]+-(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_dead(root: Path) -> list[Path]:
    """Remove the subfolders whose service process has exited; returns them."""
    removed = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        match = _SUBFOLDER.match(child.name)
        if child.is_dir() and match and not _alive(int(match.group(1))):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def prepare(service: str, settings: Settings | None = None, pid: int | None = None) -> Path | None:
    """Give this service (and the processes it forks) a fresh subfolder of the metrics
    folder and point prometheus-client at it. Returns the subfolder, or None when
    metrics are off (prometheus-client then keeps its samples in memory, unserved)."""
    settings = settings or get_settings()
    if not settings.metrics:
        os.environ.pop(ENV, None)
        return None
    root = settings.effective_metrics_dir
    root.mkdir(parents=True, exist_ok=True)
    remove_dead(root)
    own = root / f"{service}-{pid or os.getpid()}"
    shutil.rmtree(own, ignore_errors=True)  # a pid reused from an earlier run
    own.mkdir()
    os.environ[ENV] = str(own)
    return own


def discard(folder: Path | None) -> None:
    """Remove a service's subfolder as it stops."""
    if folder is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


def host_folder() -> Path | None:
    """The metrics folder of this host, when this process writes into a subfolder of it."""
    own = os.environ.get(ENV)
    return Path(own).parent if own else None
