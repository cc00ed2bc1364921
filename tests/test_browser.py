"""The web pages in headless Chromium (Debian's `chromium`), driven by Playwright, against
the live local stack: draw digits with mouse strokes, upload a folder and watch its job
finish, read the results table, cancel a job, and look at the pages at phone width.

Screenshots go to a temporary folder, or to $DIGITS_SCREENSHOT_DIR when it is set
(`DIGITS_SCREENSHOT_DIR=docs/img pytest tests/test_browser.py` refreshes the README's).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import mnist_png_bytes, tiff_scan

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = os.environ.get("DIGITS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
# The test machine is small and shared (2 cores, other test runs beside this one): wait
# generously. Every wait is an auto-retrying expectation, never a sleep.
WAIT = 60_000
SLOW = 120_000  # the first prediction also loads the model
expect.set_options(timeout=WAIT)


def ellipse(cx, cy, rx, ry, n=32):
    return [(cx + rx * math.sin(2 * math.pi * i / n), cy - ry * math.cos(2 * math.pi * i / n))
            for i in range(n + 1)]


# Pen strokes for each digit, as points in the canvas from (0, 0) top left to (1, 1).
STROKES = {
    "0": [ellipse(0.5, 0.5, 0.2, 0.32)],
    "1": [[(0.52, 0.15), (0.48, 0.85)]],
    "4": [[(0.35, 0.15), (0.28, 0.58), (0.75, 0.58)], [(0.64, 0.22), (0.62, 0.87)]],
    "7": [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.86)]],
}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, live_stack):
    context = browser.new_context(base_url=live_stack.url, viewport={"width": 1000, "height": 800})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The pages run under a Content-Security-Policy: anything it blocks is a failure too.
    page.on("console", lambda msg: errors.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("DIGITS_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


def draw(page, digit: str) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in STROKES[digit]:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=8)
        page.mouse.up()


def recognise(page, digit: str) -> None:
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#result-digit")).to_have_text("")
    draw(page, digit)
    page.get_by_role("button", name="Recognise").click()
    expect(page.locator("#result-digit")).to_have_text(digit, timeout=SLOW)


def write_folder(root: Path, digits) -> Path:
    folder = root / "scans"
    (folder / "batch2").mkdir(parents=True)
    for i, (name, data, _) in enumerate(digits):
        (folder / ("batch2" if i % 2 else "") / name).write_bytes(data)
    (folder / ".DS_Store").write_bytes(b"\0junk")  # hidden: skipped by the page
    (folder / "notes.txt").write_text("not an image")  # not an image: skipped too
    return folder


def test_draw_digits_and_see_the_answer(page, shots):
    page.goto("/")
    expect(page).to_have_title(re.compile("Draw"))
    for digit in STROKES:
        recognise(page, digit)
        confidence = page.locator("#result-confidence").inner_text()
        assert re.fullmatch(r"\d{1,3}\.\d%", confidence), confidence
        bars = page.locator("#probabilities li")
        expect(bars).to_have_count(10)
        expect(page.locator("#probabilities li.best .bar-label")).to_have_text(digit)
        if digit == "4":
            page.screenshot(path=shots / "draw.png")
    # The keyboard works too: Escape clears the focused canvas, Enter recognises.
    page.locator("#pad").focus()
    page.keyboard.press("Escape")
    expect(page.locator("#result-status")).to_have_text("Nothing recognised yet.")
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_have_text("Draw a digit first.")
    draw(page, "1")
    page.locator("#pad").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#result-digit")).to_have_text("1", timeout=SLOW)
    expect(page.locator("#error")).to_be_hidden()


def test_a_busy_lane_says_try_again(page):
    page.goto("/")
    page.route("**/api/v1/predict", lambda route: route.fulfill(
        status=503, headers={"Retry-After": "1"}, content_type="application/json",
        body='{"error": {"code": "busy", "message": "the interactive lane is full"}}'))
    draw(page, "1")
    page.get_by_role("button", name="Recognise").click()
    expect(page.locator("#result-status")).to_have_text("Busy, try again in a moment.")
    expect(page.locator("#error")).to_contain_text("503 busy")
    expect(page.get_by_role("button", name="Recognise")).to_be_enabled()


def test_upload_a_folder_and_watch_the_job(page, shots, tmp_path, live_stack):
    digits = mnist_png_bytes(100, 12)
    folder = write_folder(tmp_path, digits)
    page.goto("/upload")
    page.get_by_label("Or a whole folder").set_input_files(folder)
    expect(page.locator("#selection")).to_contain_text("12 files chosen")
    expect(page.locator("#selection")).to_contain_text("2 files are skipped")
    page.screenshot(path=shots / "upload.png")
    page.get_by_role("button", name="Upload").click()

    expect(page).to_have_url(re.compile(r"/jobs/job_[0-9a-f]{32}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#job-counts")).to_contain_text("12 of 12 images finished")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(12)
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
    expect(page.get_by_role("button", name="Show more results")).to_be_hidden()

    # Every row shows its image, decoded by the browser, and a digit.
    thumbs = page.locator("#results img.thumb")
    expect(thumbs).to_have_count(12)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img.thumb')]"
        ".every(img => img.complete && img.naturalWidth === 28)")
    # And beside it the 28x28 image the model was given.
    expect(page.locator("#results img.model-input")).to_have_count(12)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img.model-input')]"
        ".every(img => img.complete && img.naturalWidth === 28)")
    names = page.locator("#results td.filename").all_inner_texts()
    assert sorted(n.rsplit("/", 1)[-1] for n in names) == sorted(n for n, _, _ in digits)
    assert any(n.startswith("scans/batch2/") for n in names), names
    truth = {name: str(label) for name, _, label in digits}
    shown = dict(zip(names, page.locator("#results td.digit").all_inner_texts(), strict=True))
    right = sum(shown[n] == truth[n.rsplit("/", 1)[-1]] for n in names)
    assert right >= 11, shown
    page.screenshot(path=shots / "job.png", full_page=True)

    # The same job through the API agrees with the page.
    job = live_stack.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["counts"]["total"] == 12

    # Filter by flag: the page asks the server for only those rows.
    review = job["counts"]["needs_review"]
    page.get_by_label("Show").select_option("needs_review")
    expect(rows).to_have_count(review)
    expect(page.locator("#results-empty")).to_be_visible(visible=review == 0)
    page.get_by_label("Show").select_option("done")
    expect(rows).to_have_count(job["counts"]["done"] - job["counts"]["no_digit"])
    page.get_by_label("Show").select_option("")
    expect(rows).to_have_count(12)

    # CSV download.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("id,filename,status,digit,confidence")
    assert len(csv_text.splitlines()) == 13

    # The jobs list shows it, finished.
    page.goto("/jobs")
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("12 / 12")
    page.screenshot(path=shots / "jobs.png")


def test_tiff_scans_show_their_stored_thumbnail_and_model_input(page, live_stack):
    """Browsers cannot draw TIFF: the table shows the PNG thumbnail the worker stored."""
    (_, one, _), (_, two, _) = mnist_png_bytes(600, 2)
    files = [("files", ("page.tif", tiff_scan(one, 200, 120), "image/tiff")),
             ("files", ("deep.tif", tiff_scan(two, 150, 300, sixteen_bit=True), "image/tiff"))]
    job_id = live_stack.post("/api/v1/jobs", files=files).json()["id"]
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#results img.thumb")).to_have_count(2)
    sizes = page.wait_for_function("""() => {
        const imgs = [...document.querySelectorAll('#results img.thumb, #results img.model-input')];
        const done = imgs.length === 4 && imgs.every(img => img.complete && img.naturalWidth > 0);
        return done && imgs.map(img => [img.className, img.naturalWidth, img.naturalHeight,
                                         img.getAttribute('src')]);
    }""").json_value()
    by_kind = sorted((kind, width, height, src.rsplit("/", 1)[1])
                     for kind, width, height, src in sizes)
    assert by_kind == [("model-input", 28, 28, "model-input")] * 2 + [
        ("thumb", 48, 96, "thumbnail"), ("thumb", 96, 58, "thumbnail")], by_kind


def test_a_big_selection_goes_up_in_several_requests(page, tmp_path, live_stack):
    """520 files are more than one request takes (500): an open job, two parts, a seal."""
    digits = mnist_png_bytes(2000, 520)
    paths = []
    for name, data, _ in digits:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    page.goto("/upload")
    page.get_by_label("Images or zip archives").set_input_files(paths)
    expect(page.locator("#selection")).to_contain_text("520 files chosen")
    with page.expect_request(re.compile(r"/seal$")):
        page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/jobs/job_[0-9a-f]{32}$"))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#job-counts")).to_contain_text("520 of 520 images finished")
    # The table shows a page of 100 and fetches more on request.
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(100)
    page.get_by_role("button", name="Show more results").click()
    expect(rows).to_have_count(200)


def test_status_page_shows_workers_queues_and_throughput(page, live_stack, shots):
    """Against the live stack: both queues have a worker, nothing waits, and the job just
    finished shows in the images-per-second chart (read from the database)."""
    job_id = live_stack.post("/api/v1/jobs", files=[
        ("files", (name, data, "image/png")) for name, data, _ in mnist_png_bytes(3000, 300)
    ]).json()["id"]
    live_stack.wait_job(job_id)
    page.goto("/status")
    expect(page).to_have_title(re.compile("Status"))
    bulk = page.locator("#queues tr[data-queue='bulk'] td")
    expect(bulk.nth(0)).to_have_text("1")  # workers online
    expect(bulk.nth(1)).to_have_text("2")  # their processes (digits up --workers 2)
    expect(bulk.nth(2)).to_have_text("0")  # waiting
    expect(bulk.nth(3)).to_contain_text("bulk-")
    expect(page.locator("#queues tr[data-queue='interactive'] td").nth(0)).to_have_text("1")
    expect(page.locator("#pending")).to_have_text("0")
    expect(page.locator("#oldest")).to_have_text("none")
    expect(page.locator("#running")).to_have_text("0")
    expect(page.locator("#chart svg rect.column")).to_have_count(60)
    images = page.wait_for_function("""() => {
        const bars = [...document.querySelectorAll('#chart svg rect.column')];
        const total = bars.reduce((n, bar) => n + Number(bar.dataset.images), 0);
        return bars.some(bar => Number(bar.getAttribute('height')) > 0) && total;
    }""").json_value()
    assert images >= 300
    label = page.locator("#chart svg").get_attribute("aria-label")
    assert label.startswith("Images per second over the last 10 minutes: peak "), label
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=shots / "status.png", full_page=True)


def test_batches_respect_the_request_limits(page):
    page.goto("/upload")
    sizes = page.evaluate("""async () => {
        const { batches } = await import('/static/js/upload.js');
        const many = Array.from({ length: 1201 }, () => ({ size: 10 }));
        const big = [20, 20, 20, 5].map((mb) => ({ size: mb * 1024 * 1024 }));
        return [batches(many).map((b) => b.length), batches(big).map((b) => b.length)];
    }""")
    assert sizes == [[500, 500, 201], [1, 1, 2]]


def test_cancel_a_job_from_its_page(page, live_stack):
    created = live_stack.post("/api/v1/jobs", data={"open": "true"},
                              files=[("files", (name, data, "image/png"))
                                     for name, data, _ in mnist_png_bytes(300, 3)])
    job_id = created.json()["id"]
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#job-status")).to_contain_text("open: waiting for more images",
                                                         timeout=SLOW)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
    assert live_stack.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_api_errors_are_shown(page):
    page.goto("/jobs/job_" + "0" * 32)
    expect(page.get_by_role("alert")).to_contain_text("404")
    page.goto("/upload")
    page.get_by_label("Images or zip archives").set_input_files(
        files=[{"name": "one.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n"}])
    # A 400 is final (a 503 would be tried again: see the retry test below).
    page.route("**/api/v1/jobs", lambda route: route.fulfill(
        status=400, content_type="application/json",
        body='{"error": {"code": "bad_upload", "message": "not an image"}}'))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_have_text("not an image (400 bad_upload)")
    expect(page.get_by_role("button", name="Upload")).to_be_enabled()


def test_phone_width_keyboard_and_labels(browser, live_stack, shots):
    context = browser.new_context(base_url=live_stack.url, viewport={"width": 375, "height": 740},
                                  device_scale_factor=1, has_touch=True, is_mobile=True)
    context.set_default_timeout(WAIT)
    try:
        created = live_stack.post("/api/v1/jobs", files=[
            ("files", (name, data, "image/png")) for name, data, _ in mnist_png_bytes(400, 4)])
        job_id = created.json()["id"]
        page = context.new_page()
        for path in ("/", "/upload", "/jobs", "/status", f"/jobs/{job_id}"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{path} is {width} px wide at phone width"
            # Every form control has a label.
            unlabelled = page.evaluate("""() => [...document.querySelectorAll(
                'input, select, textarea, button, canvas')].filter(
                el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.textContent.trim()).map(el => el.outerHTML)""")
            assert not unlabelled, unlabelled
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=SLOW)
        expect(page.locator("#results img.thumb")).to_have_count(4)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=shots / "job-phone.png", full_page=True)
        # Without a mouse: Tab reaches the canvas and the buttons of the draw page.
        page.goto("/")
        focused = []
        for _ in range(10):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("document.activeElement.id || "
                                         "document.activeElement.textContent.trim()"))
        assert {"pad", "recognise", "clear"} <= set(focused), focused
        # A finger stroke (real touch events through the DevTools protocol) draws a 1.
        box = page.locator("#pad").bounding_box()
        cdp = context.new_cdp_session(page)
        (x0, y0), (x1, y1) = [(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
                              for x, y in STROKES["1"][0]]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart",
                                              "touchPoints": [{"x": x0, "y": y0}]})
        for i in range(1, 11):
            point = {"x": x0 + (x1 - x0) * i / 10, "y": y0 + (y1 - y0) * i / 10}
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.get_by_role("button", name="Recognise").click()
        expect(page.locator("#result-digit")).to_have_text("1", timeout=SLOW)
        page.screenshot(path=shots / "draw-phone.png", full_page=True)
    finally:
        context.close()


def test_the_upload_page_retries_a_lost_answer_and_a_busy_server(page, tmp_path, live_stack):
    """The first add reaches the server but its answer is lost (the connection resets);
    the seal first meets a 503 with Retry-After. The page tries both again, the add with
    its Idempotency-Key, and the job holds every image once."""
    digits = mnist_png_bytes(3000, 510)
    paths = []
    for name, data, _ in digits:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    adds, seals = [], []

    def lose_the_first_answer(route):
        adds.append(route.request.headers.get("idempotency-key"))
        if len(adds) == 1:
            route.fetch()  # the server stores the images...
            route.abort("connectionreset")  # ...and the page never hears of it
        else:
            route.continue_()

    def busy_once(route):
        seals.append(1)
        if len(seals) == 1:
            route.fulfill(status=503, headers={"Retry-After": "1"}, content_type=
                          "application/json", body='{"error": {"code": "busy", '
                                                   '"message": "restarting"}}')
        else:
            route.continue_()

    page.route(re.compile(r"/images$"), lose_the_first_answer)
    page.route(re.compile(r"/seal$"), busy_once)
    page.goto("/upload")
    page.get_by_label("Images or zip archives").set_input_files(paths)
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/jobs/job_[0-9a-f]{32}$"), timeout=SLOW)
    job_id = page.url.rsplit("/", 1)[1]
    assert len(adds) == 3 and adds[0] == adds[1] != adds[2], adds
    assert len(seals) == 2
    job = live_stack.wait_job(job_id)
    assert job["status"] == "succeeded" and job["counts"]["total"] == 510


def test_the_upload_page_fails_a_refused_part_alone(page, tmp_path, live_stack):
    """A part the server refuses (413) is not sent again; the rest goes up, the job is
    sealed, and the page says which part was refused before moving on."""
    digits = mnist_png_bytes(4000, 505)
    paths = []
    for name, data, _ in digits:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    adds = []

    def refuse_the_second(route):
        adds.append(1)
        if len(adds) == 2:
            route.fulfill(status=413, content_type="application/json",
                          body='{"error": {"code": "request_too_large", '
                               '"message": "too big"}}')
        else:
            route.continue_()

    page.route(re.compile(r"/images$"), refuse_the_second)
    page.goto("/upload")
    page.get_by_label("Images or zip archives").set_input_files(paths)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#progress-text")).to_contain_text(
        "The server refused part 2 (5 files): too big", timeout=SLOW)
    assert len(adds) == 2
    page.get_by_role("link", name="Open the job").click()
    expect(page).to_have_url(re.compile(r"/jobs/job_[0-9a-f]{32}$"))
    job = live_stack.wait_job(page.url.rsplit("/", 1)[1])
    assert job["status"] == "succeeded" and job["counts"]["total"] == 500


def test_strings_upload_boxes_and_a_number_drawn(page, tmp_path, live_stack, data_dir, shots):
    """String mode from the pages: the upload page's choice, the job page's boxes round each
    digit read, and a short number drawn on the wide pad."""
    from training.strings import generated_strings

    made = generated_strings(data_dir, seed=31, mix={4: 3})
    for name, blob in zip(made.files, made.blobs, strict=True):
        (tmp_path / name).write_bytes(blob)
    page.goto("/upload")
    page.get_by_label("a number").check()
    page.get_by_label("Images or zip archives").set_input_files(
        [tmp_path / name for name in made.files])
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/jobs/job_[0-9a-f]{32}$"))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#job-mode")).to_have_text("a number, read whole")
    expect(page.locator("#results .field-picture")).to_have_count(3)
    # One box per digit read, placed once each field has loaded.
    texts = page.locator("#results td.digit").all_inner_texts()
    expect(page.locator("#results .field-picture .box")).to_have_count(
        sum(len(t) for t in texts))
    assert sum(t in made.labels for t in texts) >= 2, (texts, made.labels)
    page.screenshot(path=shots / "strings-job.png", full_page=True)

    page.goto("/")
    page.get_by_label("A short number").check()
    assert page.locator("#pad").evaluate("c => c.width") == 840
    box = page.locator("#pad").bounding_box()
    for i, digit in enumerate("107"):
        for stroke in STROKES[digit]:
            points = [(box["x"] + (i + 0.15 + 0.7 * x) / 3 * box["width"],
                       box["y"] + y * box["height"]) for x, y in stroke]
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point, steps=8)
            page.mouse.up()
    page.get_by_role("button", name="Recognise").click()
    expect(page.locator("#result-digit")).to_have_text("107", timeout=SLOW)
