"""Headers that every response carries: the pages run only their own script files
(no inline script, no eval), are never framed, and nothing is sniffed into another type."""

from __future__ import annotations

from flask import Flask

# Same origin for everything the pages load or call; images also from the canvas (data:)
# and from files picked for upload (blob:). The CSSOM (`el.style.width = ...`) is not
# inline style in CSP's sense, so style-src needs no 'unsafe-inline'.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
}


def register(app: Flask) -> None:
    @app.after_request
    def _headers(response):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
