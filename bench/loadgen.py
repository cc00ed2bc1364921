"""A closed-loop HTTP load client for the interactive lane (and its baseline).

N clients, one keep-alive HTTP/1.1 connection each; each POSTs one raw image body at
a time and sends the next as soon as the answer is in. All N run on one thread's
epoll loop, as wrk and other load generators do: with a thread per client (this
client before 2026-12-05) the 32 threads of a Python process on the same two cores
as the server queued for the GIL and the CPU, and each answer waited for its thread
to be scheduled: 5-10 ms of the lane's p99 at 32 clients was the client's
(docs/scaling.md). Requests are built once and answers parsed with a few byte
operations (no http.client, whose header parser costs more than the servers it
measures on a 2-core machine). A server that closes the connection after each answer
(gunicorn's sync workers) is reconnected.

    python bench/loadgen.py http://127.0.0.1:8000/api/v1/predict folder/ --clients 8
"""

from __future__ import annotations

import argparse
import itertools
import selectors
import socket
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


class _Client:
    """One closed-loop client: its connection, what it has read, its request in flight."""

    __slots__ = ("answered", "buffer", "index", "sock", "started", "unsent")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.index = -1
        self.started = 0.0
        self.unsent = b""
        self.answered = 0  # on this connection


def parse_answer(buffer: bytes) -> tuple[int, bytes, bytes, bool] | None:
    """(status, body, what follows it, whether the server closes) once `buffer` holds a
    whole answer; None until then."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buffer[:end].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    start = end + 4
    if len(buffer) < start + length:
        return None
    return status, buffer[start:start + length], buffer[start + length:], close


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
    `check(index, status, body)` may look at each timed answer (it runs on the loop,
    so keep it cheap)."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)

    def phase(indices, record: bool) -> tuple[float, list[float], dict[int, int]]:
        order = iter(indices)
        selector = selectors.DefaultSelector()
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        in_flight = 0

        def send(client: _Client, index: int) -> None:
            if client.sock is None:
                sock = socket.create_connection(address, timeout=60)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                client.sock, client.buffer, client.answered = sock, b"", 0
                selector.register(sock, selectors.EVENT_READ, client)
            client.index, client.started = index, time.perf_counter()
            data = requests[index]
            sent = client.sock.send(data)
            if sent < len(data):  # the rest once the socket can take it
                client.unsent = data[sent:]
                selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                client)

        def send_next(client: _Client) -> None:
            nonlocal in_flight
            index = next(order, None)
            if index is not None:
                send(client, index)
                in_flight += 1

        def close(client: _Client) -> None:
            selector.unregister(client.sock)
            client.sock.close()
            client.sock = None

        own = [_Client() for _ in range(clients)]
        started = time.perf_counter()
        for client in own:
            send_next(client)
        try:
            while in_flight:
                ready = selector.select(60)
                if not ready:
                    raise TimeoutError(f"no answer from {url} in 60 s")
                for key, events in ready:
                    client = key.data
                    if events & selectors.EVENT_WRITE and client.unsent:
                        client.unsent = client.unsent[client.sock.send(client.unsent):]
                        if not client.unsent:
                            selector.modify(client.sock, selectors.EVENT_READ, client)
                    if not events & selectors.EVENT_READ:
                        continue
                    chunk = client.sock.recv(65536)
                    if not chunk:  # a kept-alive connection closed: once more, anew
                        if client.buffer or not client.answered:
                            raise ConnectionError(f"{url} closed a connection unanswered")
                        close(client)
                        send(client, client.index)
                        continue
                    client.buffer += chunk
                    answer = parse_answer(client.buffer)
                    if answer is None:
                        continue
                    status, body, client.buffer, closing = answer
                    in_flight -= 1
                    client.answered += 1
                    if record:
                        latencies.append((time.perf_counter() - client.started) * 1000)
                        statuses[status] = statuses.get(status, 0) + 1
                        if check is not None:
                            check(client.index, status, body)
                    if closing:
                        close(client)
                    send_next(client)
            seconds = time.perf_counter() - started
        finally:
            for client in own:
                if client.sock is not None:
                    close(client)
            selector.close()
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
