"""The web pages: static HTML and JavaScript served by the API itself, no build step."""

from __future__ import annotations

from flask import Blueprint, current_app, send_from_directory

bp = Blueprint("pages", __name__)


def _page(name: str):
    response = send_from_directory(current_app.static_folder, name)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/")
def draw():
    return _page("index.html")


@bp.get("/upload")
def upload():
    return _page("upload.html")


@bp.get("/jobs")
def jobs():
    return _page("jobs.html")


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    return _page("job.html")


@bp.get("/status")
def status():
    return _page("status.html")


@bp.get("/signin")
def signin():
    return _page("signin.html")
