"""The web pages: HTML templates around static JavaScript, served by the API itself, no
build step. Every page shares templates/base.html (head, navigation); the templates hold
no data: the scripts fetch it from the API."""

from __future__ import annotations

from flask import Blueprint, make_response, render_template

bp = Blueprint("pages", __name__)


def _page(name: str):
    response = make_response(render_template(name))
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
