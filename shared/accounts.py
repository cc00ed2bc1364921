"""Accounts and their API keys, as plain functions (used by the API and `digits keys`).

An account is a name; its keys are random (32 bytes from the OS, url-safe), shown once
when made and stored only as HMAC-SHA256 under the server secret. A keyed fast hash
suits random keys: nothing to guess, so no password hash (which would cost every
interactive request milliseconds); and a leaked table without the secret is useless.
Jobs belong to an account; an admin key sees every account's jobs. Jobs made before
keys existed, and calls without a key on an open local stack, belong to `local`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import ApiKey
from shared.settings import Settings

LOCAL_ACCOUNT = "local"
KEY_PREFIX = "dgt_"
_secret_cache: dict[str, bytes] = {}


@dataclass(frozen=True)
class Principal:
    account: str
    admin: bool = False
    key_id: str | None = None


def server_secret(settings: Settings) -> bytes:
    """DIGITS_SECRET_KEY, or one made once and kept beside the local stack's state
    (created whole, readable by its owner only, so concurrent processes agree)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    # Looked up by the folder as configured: resolving the path (a system call per
    # component) on every keyed request cost more than checking the key.
    cached = _secret_cache.get(str(settings.state_dir))
    if cached:
        return cached
    path = (settings.state_dir / "secret.key").resolve()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret.key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # atomic; loses quietly to a process that made it first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = Path(path).read_text().strip().encode()
    _secret_cache[str(settings.state_dir)] = secret
    return secret


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def create_key(session: Session, secret: bytes, account: str,
               admin: bool = False) -> tuple[str, ApiKey]:
    """A new key for `account` (made if new): (the key, shown once; its row)."""
    account = account.strip()
    if not account or len(account) > 200:
        raise ValueError("an account name is 1 to 200 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id="key_" + secrets.token_hex(6), account=account, admin=admin,
                 key_hash=hash_key(secret, key), created_at=datetime.now(UTC))
    session.add(row)
    session.flush()
    return key, row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.account, ApiKey.created_at)))


def revoke(session: Session, key_id: str) -> ApiKey | None:
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    known.clear()  # this process at once; others within KNOWN_KEYS_TTL_S
    return row


# Live keys this process checked lately, by hash: a client calling /predict a thousand
# times a second would otherwise cost a database read per call (about 0.2 ms, a quarter
# of the interactive lane's API time). Only live keys are kept, so an unknown key is
# looked up every time, and a revoked key stops working in every API process within
# KNOWN_KEYS_TTL_S (at once in the process that revoked it).
KNOWN_KEYS_TTL_S = 2.0
KNOWN_KEYS_MAX = 10_000


class KnownKeys:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._seen.get(digest)
        if entry is None or time.monotonic() - entry[0] > KNOWN_KEYS_TTL_S:
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if len(self._seen) >= KNOWN_KEYS_MAX:
            self._seen.clear()  # many keys at once: start afresh rather than track ages
        self._seen[digest] = (time.monotonic(), principal)

    def clear(self) -> None:
        self._seen.clear()


known = KnownKeys()


def known_principal(secret: bytes, key: str) -> Principal | None:
    """The account of a live key this process checked lately, without the database."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    return known.get(hash_key(secret, key))


def authenticate(session: Session, secret: bytes, key: str) -> Principal | None:
    """The account of a live key, or None (unknown or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_key(secret, key)
    found = known.get(digest)
    if found is not None:
        return found
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or row.revoked_at is not None:
        return None
    found = Principal(row.account, bool(row.admin), row.id)
    known.put(digest, found)
    return found


def by_key_id(session: Session, key_id: str) -> Principal | None:
    """The account of a live key by its id (a signed-in page's session names the key)."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.account, bool(row.admin), row.id)
