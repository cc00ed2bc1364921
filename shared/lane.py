"""The interactive lane's transport: one Redis list of requests, one reply key each.

Chosen by measurement (docs/scaling.md): a prediction through Celery cost about
9 ms of CPU, most of it in Celery's task protocol and its result backend (a
pub/sub consumer per waiting request), not in the model. Here a request is one
list element, `header \\n image bytes` (no base64, no JSON around the image), pushed
by a Lua script that refuses it when the lane is full; the API then waits on its own
reply key with BLPOP. A lane worker (worker/lane.py) pops every waiting request at
once, so concurrent requests share a forward pass, and pushes each answer to its key
in one pipelined round trip. Any number of lane workers, on any host that reaches the
Redis, take from the same list.

A request carries a deadline: a worker drops one whose caller has stopped waiting
instead of computing it late, and the caller that times out takes its request back
off the list. This module imports neither torch nor Flask: both sides use it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

import redis

from shared.models import JobMode

REQUESTS_KEY = "digits:lane:requests"
REPLY_PREFIX = "digits:lane:reply:"
# An answer nobody collected (its caller gave up a moment before) goes after this.
REPLY_TTL_S = 30

# KEYS[1] the list, KEYS[2] the caller's reply key; ARGV[1] the request, ARGV[2] the most
# that may wait, ARGV[3] the caller's rate-count prefix ('' when not counted), then
# (amount, window seconds) pairs. Returns {1, length} when pushed, {0, 0} when the lane
# is full, {-1, seconds to wait} when the caller is past a limit (then nothing is
# pushed). A per-account fixed window counted here, in the same round trip as the push,
# instead of Flask-Limiter's moving window on a second round trip: the lane's API time
# stays within 10 % with keys on. A refusal is also left on the reply key, so that a
# caller whose BLPOP went out in the same round trip as the push hears at once.
_PUSH_IF_ROOM = """
local function refuse(code, value)
  redis.call('RPUSH', KEYS[2], 'refused')
  redis.call('EXPIRE', KEYS[2], REPLY_TTL_S)
  return {code, value}
end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return refuse(0, 0) end
if ARGV[3] ~= '' then
  local now = tonumber(redis.call('TIME')[1])
  for i = 4, #ARGV, 2 do
    local amount, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    local key = ARGV[3] .. window .. ':' .. math.floor(now / window)
    local used = redis.call('INCR', key)
    if used == 1 then redis.call('EXPIRE', key, window) end
    if used > amount then return refuse(-1, window - now % window) end
  end
end
return {1, redis.call('RPUSH', KEYS[1], ARGV[1])}
""".replace("REPLY_TTL_S", str(REPLY_TTL_S))
RATE_PREFIX = "digits-rate:predict:"


class LaneBusy(Exception):
    """The lane holds as many waiting requests as it may: answer 503, retry soon."""


class LaneTimeout(Exception):
    """No lane worker answered within the timeout."""


class RateLimited(Exception):
    """The caller's account is past its /predict rate: answer 429."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Request:
    reply_key: str
    deadline: float  # time.time() after which nobody waits for the answer
    request_id: str
    image: bytes
    mode: str = JobMode.DIGIT  # or JobMode.STRING: a field of digits read whole


def encode(request: Request) -> bytes:
    head = f"{request.reply_key} {request.deadline:.3f} {request.mode} {request.request_id}\n"
    return head.encode() + request.image


def decode(raw: bytes) -> Request:
    head, _, image = raw.partition(b"\n")
    reply_key, deadline, mode, request_id = head.decode().split(" ", 3)
    return Request(reply_key, float(deadline), request_id, image, mode)


class Lane:
    """The API's side: send images, wait for their answers."""

    def __init__(self, client, max_waiting: int, timeout_s: float) -> None:
        self.client = client
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _own(self):
        """This thread's (or greenlet's) own connection from the shared pool: each call
        then skips the pool's checkout, lock and fork check, a fifth of the API's Redis
        time. It goes back to the pool when its thread or greenlet ends."""
        own = getattr(self._local, "client", None)
        if own is None:
            own = self._local.client = redis.Redis(
                connection_pool=self.client.connection_pool, single_connection_client=True)
        return own

    def _push_args(self, raw: bytes, key: str, account: str | None,
                   limits: list[tuple[int, int]]) -> list:
        counted = [v for pair in limits for v in pair] if account else []
        prefix = f"{RATE_PREFIX}{account}:" if counted else ""
        # EVAL, not EVALSHA: Redis caches the script by its digest all the same, and no
        # call ever meets NOSCRIPT after a restart or SCRIPT FLUSH.
        return ["EVAL", _PUSH_IF_ROOM, 2, REQUESTS_KEY, key, raw, self.max_waiting, prefix,
                *counted]

    def ask_many(self, images: list[bytes], request_id: str, account: str | None = None,
                 limits: list[tuple[int, int]] = (), mode: str = JobMode.DIGIT) -> list[dict]:
        """The answers for the images, in order: all queued in one round trip, so that
        one lane batch usually takes them together; all or none. With `account`, each
        image counts against each (amount, window seconds) of `limits` for it."""
        deadline = time.time() + self.timeout_s
        keys = [REPLY_PREFIX + uuid.uuid4().hex for _ in images]
        raws = [encode(Request(key, deadline, request_id, image, mode))
                for key, image in zip(keys, images, strict=True)]
        pushes = [self._push_args(raw, key, account, limits)
                  for raw, key in zip(raws, keys, strict=True)]
        if len(raws) == 1:
            return [self._ask_one(raws[0], keys[0], pushes[0], deadline)]
        client = self._own()
        pipe = client.pipeline(transaction=False)
        for push in pushes:
            pipe.execute_command(*push)
        outcomes = pipe.execute()
        refused = [(pushed, value) for pushed, value in outcomes if pushed <= 0]
        if refused:
            _take_back(client, [raw for raw, (pushed, _) in zip(raws, outcomes, strict=True)
                                if pushed > 0])
            client.delete(*keys)  # the refusals left there
            _refuse(*refused[0], self.max_waiting)
        answers = []
        for i, key in enumerate(keys):
            left = deadline - time.time()
            # BLPOP's timeout is whole or fractional seconds (Redis >= 6); 0 would block.
            got = client.blpop([key], timeout=left) if left > 0.001 else None
            if got is None:
                self._timed_out(client, raws[i:])
            answers.append(json.loads(got[1]))
        return answers

    def _ask_one(self, raw: bytes, key: str, push: list, deadline: float) -> dict:
        """One image in one round trip: the push and the BLPOP on its reply key go out
        together (a refused push leaves its refusal on the key, so the BLPOP never waits
        for nothing); the two replies are read off the thread's own connection. Half the
        Redis calls of push-then-wait, which were a quarter of the API's time a call."""
        client = self._own()
        conn = client.connection
        packed = conn.pack_commands([push, ["BLPOP", key, max(0.001, deadline - time.time())]])
        for attempt in (1, 2):
            try:
                conn.send_packed_command(packed)
                (pushed, value), got = conn.read_response(), conn.read_response()
                break
            except BaseException as exc:
                # A reply may still be due on this connection: drop it rather than misread
                # it later (a worker's answer nobody collects expires). One closed under
                # us (a Redis restart) is tried once more on a new one.
                conn.disconnect()
                if attempt == 2 or not isinstance(exc, redis.ConnectionError):
                    raise
        if pushed <= 0:
            _refuse(pushed, value, self.max_waiting)
        if got is None:
            self._timed_out(client, [raw])
        return json.loads(got[1])

    def _timed_out(self, client, raws: list[bytes]):
        _take_back(client, raws)  # if no worker has taken them: nobody computes them late
        raise LaneTimeout(f"no lane worker answered within {self.timeout_s:g} s")


def _refuse(pushed: int, value: int, max_waiting: int):
    if pushed == 0:
        raise LaneBusy(f"{max_waiting} predictions are already waiting")
    raise RateLimited(max(1, int(value)))


def _take_back(client, raws: list[bytes]) -> None:
    for raw in raws:
        client.lrem(REQUESTS_KEY, 1, raw)


def answer(pipe, request: Request, result: dict) -> None:
    """Queue one answer on a pipeline (the worker sends a batch's answers at once)."""
    pipe.rpush(request.reply_key, json.dumps(result, separators=(",", ":")))
    pipe.expire(request.reply_key, REPLY_TTL_S)


def take(client, most: int, wait_s: float, gather_s: float = 0.0) -> list[bytes]:
    """Up to `most` waiting requests: blocks up to `wait_s` for the first, waits
    `gather_s` more for others to arrive, then takes whatever else is waiting in one more
    round trip (LPOP with a count, Redis >= 6.2)."""
    first = client.blpop([REQUESTS_KEY], timeout=wait_s)
    if first is None:
        return []
    if gather_s > 0 and most > 1:
        time.sleep(gather_s)
    rest = client.lpop(REQUESTS_KEY, most - 1) if most > 1 else None
    return [first[1], *(rest or [])]


def waiting(client) -> int:
    return int(client.llen(REQUESTS_KEY))
