"""Who is calling: an API key (`Authorization: Bearer KEY`), or a page signed in with a
key (an HttpOnly, SameSite=Strict session cookie, whose state-changing requests must
carry its CSRF token in `X-CSRF-Token`), or, on an open local stack, nobody: the
`local` account. `X-Digits-Owner` is no longer read. Keys never reach a log: the
access log has paths only, and the session cookie names the key's id, not the key.

Sessions: POST /api/v1/session with {"key": ...} signs a page in, GET says who is
signed in (and the CSRF token), DELETE signs out.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Blueprint, Flask, current_app, g, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface

from api.errors import ApiError
from shared import accounts, db
from shared.accounts import LOCAL_ACCOUNT, Principal
from shared.settings import get_settings

bp = Blueprint("auth", __name__, url_prefix="/api/v1")

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Paths under /api/v1 that anyone may call: the document, and signing in and out.
PUBLIC = ("/api/v1/openapi.json", "/api/v1/session")


def mode(app: Flask | None = None) -> str:
    """open or required. `auto` is resolved by `digits api` from the address it binds
    (it sets DIGITS_AUTH); an app made any other way (tests, a bare WSGI server on a
    developer's machine) is open under auto: set DIGITS_AUTH=required where it matters."""
    app = app or current_app
    value = app.config.get("DIGITS_AUTH") or get_settings().auth
    return "required" if value == "required" else "open"


def principal() -> Principal:
    return g.principal


def owner() -> str:
    """The account new jobs belong to."""
    return g.principal.account


def scope() -> str | None:
    """The account whose jobs the caller may see, or None for an admin: every account."""
    return None if g.principal.admin else g.principal.account


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="digits"'})


def _secret() -> bytes:
    return accounts.server_secret(get_settings())


def _from_bearer(header: str) -> Principal:
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("send the API key as `Authorization: Bearer KEY`")
    key, secret = key.strip(), _secret()
    # A key seen lately needs no session: a /predict caller sends one a call.
    found = accounts.known_principal(secret, key)
    if found is None:
        with db.session() as s:
            found = accounts.authenticate(s, secret, key)
    if found is None:
        raise _unauthorized("the API key is unknown or revoked")
    return found


def _from_cookie() -> Principal | None:
    key_id = session.get("key_id")
    if not key_id:
        return None
    with db.session() as s:
        found = accounts.by_key_id(s, key_id)
    if found is None:  # revoked since the page signed in
        session.clear()
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.get("csrf", "").encode()):
            raise ApiError(403, "csrf_failed",
                           f"a signed-in page must send its {CSRF_HEADER} (GET /api/v1/session)")
    return found


def _identify() -> None:
    if request.path == "/api/v1/session" and request.method == "POST":
        return  # signing in: the key in the body is the credential
    header = request.headers.get("Authorization")
    if header:
        g.principal = _from_bearer(header)
        return
    found = _from_cookie()
    if found is not None:
        g.principal = found
    elif mode() == "open":
        g.principal = Principal(LOCAL_ACCOUNT)
    elif request.path.startswith("/api/v1") and request.path not in PUBLIC:
        raise _unauthorized("this server needs an API key: `Authorization: Bearer KEY`, "
                            "`digits --api-key`, or sign in on the web page")


@bp.post("/session")
def sign_in():
    # JSON only: a form from another site cannot send it without a CORS preflight, so
    # nobody can sign a browser into their own account behind its user's back.
    body = request.get_json(silent=True) if request.is_json else None
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key.strip():
        raise ApiError(400, "bad_parameter", "send the API key as JSON: {\"key\": ...}")
    key, secret = key.strip(), _secret()
    # A key seen lately needs no session: a /predict caller sends one a call.
    found = accounts.known_principal(secret, key)
    if found is None:
        with db.session() as s:
            found = accounts.authenticate(s, secret, key)
    if found is None:
        raise _unauthorized("the API key is unknown or revoked")
    session.clear()
    session["key_id"], session["csrf"] = found.key_id, secrets.token_urlsafe(24)
    return jsonify(_whoami(found))


@bp.get("/session")
def whoami():
    found = g.get("principal")
    if found is None:
        raise _unauthorized("not signed in")
    return jsonify(_whoami(found))


@bp.delete("/session")
def sign_out():
    session.clear()
    return jsonify({"signed_in": False, "auth": mode()})


def _whoami(found: Principal) -> dict:
    signed_in = found.key_id is not None
    return {"account": found.account, "admin": found.admin, "signed_in": signed_in,
            "auth": mode(), "csrf_token": session.get("csrf") if signed_in else None}


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, except that a request without the cookie (every
    API client's) gets an empty session at once, instead of a signing serializer built
    first to find nothing to verify."""

    def open_session(self, app, request):
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def register(app: Flask) -> None:
    settings = get_settings()
    app.secret_key = accounts.server_secret(settings)
    app.session_interface = _CookieSessions()
    app.config.update(SESSION_COOKIE_NAME="digits_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict")

    @app.before_request
    def _auth() -> None:
        g.principal = None
        if request.path.startswith("/api/v1"):
            _identify()
