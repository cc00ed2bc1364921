"""A closed-loop HTTP load client for the interactive lane (and its baseline).

N threads, one keep-alive HTTP/1.1 connection each; each thread POSTs one raw image
body at a time and sends the next as soon as the answer is in. Requests are built
once and answers parsed with a few byte operations (no http.client, whose header
parser costs more than the servers it measures on a 2-core machine). A server that
closes the connection after each answer (gunicorn's sync workers) is reconnected.

    python bench/loadgen.py http://127.0.0.1:8000/api/v1/predict folder/ --clients 8
"""

from __future__ import annotations

import argparse
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Load:
    """The figures of one closed-loop run."""

    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    statuses: dict[int, int]

    @property
    def images_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0

    def summary(self) -> dict:
        return {"clients": self.clients, "images_per_s": round(self.images_per_s, 1),
                "p50_ms": round(self.percentile(50), 2), "p99_ms": round(self.percentile(99), 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


class Connection:
    """One keep-alive connection that sends prepared requests and reads the answers."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def send(self, request: bytes) -> tuple[int, bytes]:
        """(status, body); reconnects once when a kept-alive connection was closed."""
        for attempt in (0, 1):
            sock = self.sock or self._open()
            try:
                sock.sendall(request)
                return self._answer(sock)
            except (ConnectionError, EOFError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buffer += chunk

    def _answer(self, sock: socket.socket) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill(sock)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(self.buffer) < length:
            self._fill(sock)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            self.close()
        return status, body


def build_requests(url: str, bodies: list[bytes], headers: dict[str, str] | None = None,
                   content_type: str = "image/png") -> list[bytes]:
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return [(f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
             f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
             ).encode() + body for body in bodies]


def run(url: str, requests: list[bytes], clients: int, warmup: int = 200,
        check=None) -> Load:
    """Send every request once, `clients` at a time (after `warmup` untimed ones).
    `check(index, status, body)` may look at each timed answer (it runs in the
    sending thread, so keep it cheap)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lock = threading.Lock()

    def drive(order, record: bool, out: list, statuses: dict) -> None:
        # `out` and `statuses` are this thread's own: merged after the join, so no
        # count is lost to two threads updating one dict at once.
        conn = Connection(host, port)
        try:
            while True:
                with lock:
                    index = next(order, None)
                if index is None:
                    return
                started = time.perf_counter()
                status, body = conn.send(requests[index])
                elapsed = (time.perf_counter() - started) * 1000
                if record:
                    out.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1
                    if check is not None:
                        check(index, status, body)
        finally:
            conn.close()

    def phase(indices, record: bool) -> tuple[float, list[float], dict[int, int]]:
        order = iter(indices)
        own = [([], {}) for _ in range(clients)]
        threads = [threading.Thread(target=drive, args=(order, record, *mine)) for mine in own]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        latencies = [x for mine, _ in own for x in mine]
        statuses: dict[int, int] = {}
        for _, mine in own:
            for status, n in mine.items():
                statuses[status] = statuses.get(status, 0) + n
        return seconds, latencies, statuses

    n = len(requests)
    if warmup:
        phase(itertools.islice(itertools.cycle(range(n)), warmup), record=False)
    seconds, latencies, statuses = phase(range(n), record=True)
    return Load(clients, len(latencies), seconds, latencies, statuses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("folder", type=Path, help="images to send, each once")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    bodies = [p.read_bytes() for p in sorted(args.folder.iterdir()) if p.is_file()]
    print(run(args.url, build_requests(args.url, bodies), args.clients, args.warmup).summary())


if __name__ == "__main__":
    main()
