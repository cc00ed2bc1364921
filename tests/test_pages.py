"""The web pages without a browser: every page route serves its HTML, everything the pages
load is served too, and nothing comes from another site (the pages work offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api import create_app

STATIC = Path(__file__).resolve().parent.parent / "api" / "static"
TEMPLATES = STATIC.parent / "templates"
# Each page and the script that drives it; the four in the navigation mark themselves.
PAGES = {"/": "draw.js", "/upload": "upload.js", "/jobs": "jobs.js",
         "/jobs/job_0123456789abcdef0123456789abcdef": "job.js", "/status": "status.js",
         "/signin": "signin.js"}
NAVIGATION = ("/", "/upload", "/jobs", "/status")


@pytest.fixture
def client(use_database, sqlite_url, redis_db):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    return create_app({"TESTING": True}).test_client()


@pytest.mark.parametrize("path", PAGES)
def test_each_page_and_what_it_loads_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    html = response.get_data(as_text=True)
    assert '<meta name="viewport"' in html and '<html lang="en">' in html
    assert html.count("<h1>") == 1 and html.rstrip().endswith("</html>")
    current = re.findall(r'<a href="([^"]+)" aria-current="page">', html)
    assert current == ([path] if path in NAVIGATION else [])
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert f"/static/js/{PAGES[path]}" in assets and "/static/css/style.css" in assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_module_imports_resolve():
    for script in (STATIC / "js").glob("*.js"):
        for target in re.findall(r'from "(\./[^"]+)"', script.read_text()):
            assert (script.parent / target).is_file(), f"{script.name} imports {target}"


def test_nothing_is_loaded_from_another_site():
    for file in [*STATIC.rglob("*"), *TEMPLATES.rglob("*")]:
        if file.suffix in (".html", ".js", ".css"):
            text = file.read_text()
            assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text), file


def test_every_form_control_has_a_label(client):
    for path in PAGES:
        html = client.get(path).get_data(as_text=True)
        labelled = set(re.findall(r'<label for="([^"]+)"', html))
        for tag, attrs in re.findall(r"<(input|select|textarea)\b([^>]*)>", html):
            control = re.search(r'id="([^"]+)"', attrs)
            assert control and control.group(1) in labelled, f"{path}: <{tag}{attrs}>"


@pytest.mark.parametrize("path", [*PAGES, "/api/v1/jobs", "/static/js/api.js"])
def test_pages_and_the_api_send_a_policy_without_inline_script_and_no_framing(client, path):
    headers = client.get(path).headers
    policy = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'" and "unsafe" not in headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_no_page_carries_inline_script_or_style(client):
    for path in PAGES:
        text = client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\son[a-z]+=|\sstyle=|<style", text), path
