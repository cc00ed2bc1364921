"""A stack that requires API keys (DIGITS_AUTH=required), in headless Chromium: a page
that needs a key sends the person to /signin and back; signed in (an HttpOnly cookie,
never the key), the pages upload (with the session's CSRF token) and watch the job."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import mnist_png_bytes
from tests.test_browser import SLOW, WAIT, browser, expect  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_sign_in_then_upload_and_watch_a_job(browser, locked_stack, tmp_path):  # noqa: F811
    assert "API keys: required" in locked_stack.log.read_text()
    assert requests.get(locked_stack.url + "/api/v1/jobs", timeout=10).status_code == 401
    header = locked_stack.key("web-user")
    key = header["Authorization"].split(" ", 1)[1]
    context = browser.new_context(base_url=locked_stack.url)
    context.set_default_timeout(WAIT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    try:
        page.goto("/jobs")
        expect(page).to_have_url(re.compile(r"/signin\?next=%2Fjobs$"))
        page.get_by_label("API key").fill("dgt_wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#error")).to_contain_text("unknown or revoked")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/jobs$"))
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["digits_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert key not in session["value"]

        name, data, _ = mnist_png_bytes(7, 1)[0]
        (tmp_path / name).write_bytes(data)
        page.goto("/upload")
        page.get_by_label("Images or zip archives").set_input_files([tmp_path / name])
        page.get_by_role("button", name="Upload").click()
        expect(page).to_have_url(re.compile(r"/jobs/job_[0-9a-f]{32}$"))
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=SLOW)
        job_id = page.url.rsplit("/", 1)[1]
    finally:
        context.close()
    assert not errors, errors
    job = requests.get(f"{locked_stack.url}/api/v1/jobs/{job_id}", headers=header,
                       timeout=10).json()
    assert job["owner"] == "web-user"
    other = locked_stack.key("someone-else")
    assert requests.get(f"{locked_stack.url}/api/v1/jobs/{job_id}", headers=other,
                        timeout=10).status_code == 404
