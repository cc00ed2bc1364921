"""Every error leaves the API as JSON: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = error_response(exc.status, exc.code, exc.message)
        return body, status, exc.headers

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        parts = app.config.get("MAX_FORM_PARTS")
        return error_response(
            413, "request_too_large",
            f"the request is larger than {limit:,} bytes or has more than {parts:,} parts; "
            "send large folders in several requests (POST /api/v1/jobs/{id}/images)",
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error: %s", exc)
        return error_response(500, "internal_error", "internal server error")
