// The job page: live status and progress, the results table with each image's thumbnail
// and the 28x28 input the model saw, filtering by flag, CSV download and cancel. The job
// is fetched every second until it is final; the results are fetched again whenever the
// finished count moves.

import { FINAL, badge, getJSON, percent, poll, postForm, showError, when } from "./api.js";

const jobId = decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop());
const base = `/api/v1/jobs/${encodeURIComponent(jobId)}`;

const $ = (id) => document.getElementById(id);
const errorBox = $("error");
const statusOut = $("job-status");
const progressBar = $("job-progress");
const countsOut = $("job-counts");
const csvLink = $("csv");
const cancelButton = $("cancel");
const filter = $("filter");
const resultsBody = $("results").querySelector("tbody");
const resultsEmpty = $("results-empty");
const moreButton = $("more");

const PAGE = 100;
let job = null;
let shown = 0; // rows in the table
let cursor = null;
let seen = ""; // total and finished counts when the table was last loaded

const FILTERS = {
  "": {},
  needs_review: { needs_review: "true" },
  no_digit: { status: "no_digit" },
  failed: { status: "failed" },
  done: { status: "done" },
  pending: { status: "pending" },
  cancelled: { status: "cancelled" },
};

function query(extra = {}) {
  return new URLSearchParams({ ...FILTERS[filter.value], ...extra }).toString();
}

function finishedCount(c) {
  return c.total - c.pending;
}

function renderJob(j) {
  job = j;
  document.title = `Job ${j.id} · digits`;
  $("job-id").textContent = j.id;
  $("job-mode").textContent = j.mode === "string" ? "a number, read whole" : "one digit";
  statusOut.replaceChildren(badge(j.status), j.open ? " (open: waiting for more images)" : "");
  const c = j.counts;
  progressBar.max = c.total || 1;
  progressBar.value = finishedCount(c);
  countsOut.textContent = `${finishedCount(c)} of ${c.total} images finished: ` +
    `${c.done - c.no_digit} recognised, ${c.needs_review} need review, ` +
    `${c.no_digit} without a digit, ${c.failed} failed` +
    (c.cancelled ? `, ${c.cancelled} cancelled` : "") + ".";
  $("job-created").textContent = when(j.created_at);
  $("job-finished").textContent = j.finished_at ? when(j.finished_at) : "–";
  $("job-model").textContent = j.model_version || "–";
  cancelButton.disabled = FINAL.includes(j.status);
  const counts = { needs_review: c.needs_review, no_digit: c.no_digit, failed: c.failed };
  for (const option of filter.options) {
    const n = counts[option.value];
    const label = option.textContent.replace(/ \(\d+\)$/, "");
    option.textContent = n === undefined ? label : `${label} (${n})`;
  }
  csvLink.href = `${base}/results?${query({ format: "csv" })}`;
}

function flagsOf(item) {
  const flags = [];
  if (item.status === "pending") flags.push(badge("pending"));
  if (item.status === "cancelled") flags.push(badge("cancelled"));
  if (item.needs_review) flags.push(badge("needs review", "review"));
  if (item.status === "no_digit") flags.push(badge("no digit", "no_digit"));
  if (item.status === "failed") flags.push(badge("error", "failed"));
  if (item.error) {
    const message = document.createElement("span");
    message.className = "item-error";
    message.textContent = item.error;
    flags.push(message);
  }
  return flags;
}

function picture(src, alt, className) {
  const img = document.createElement("img");
  img.className = className;
  img.src = src;
  img.alt = alt;
  img.loading = "lazy";
  img.width = 56;
  img.height = 56;
  return img;
}

// The thumbnail stored with a result draws whatever the upload's format was (TIFF, BMP,
// 16-bit); unfinished images, and results from before thumbnails were kept, show the
// upload itself.
function thumbnail(item) {
  const { image, thumbnail: stored } = item.links;
  const img = picture(stored || image, `Image ${item.filename}`, "thumb");
  if (stored) img.addEventListener("error", () => { img.src = image; }, { once: true });
  return img;
}

// Beside the thumbnail, the 28x28 image the model was given (none for unfinished and
// failed images, nor for results from before it was kept).
function pictures(item) {
  const pair = document.createElement("div");
  pair.className = "pictures";
  pair.append(thumbnail(item));
  if (item.links.model_input) {
    const seen = picture(item.links.model_input, `What the model saw of ${item.filename}`,
      "model-input");
    seen.title = "What the model saw (28x28)";
    seen.addEventListener("error", () => seen.remove(), { once: true });
    pair.append(seen);
  }
  return pair;
}

// A string item: the upload itself with a box round each digit read (boxes are in the
// image's pixels, placed once it has loaded); its thumbnail when the browser cannot draw it.
function fieldPicture(item) {
  const wrap = document.createElement("div");
  wrap.className = "field-picture";
  const img = document.createElement("img");
  img.alt = `Image ${item.filename}, the digits read boxed`;
  img.addEventListener("load", () => {
    for (const d of item.digits || []) {
      const [left, top, right, bottom] = d.box;
      const box = document.createElement("span");
      box.className = "box" + (d.confidence < 0.9 ? " unsure" : "");
      box.title = `${d.digit} (${percent(d.confidence)})`;
      box.style.left = `${(100 * left) / img.naturalWidth}%`;
      box.style.top = `${(100 * top) / img.naturalHeight}%`;
      box.style.width = `${(100 * (right - left)) / img.naturalWidth}%`;
      box.style.height = `${(100 * (bottom - top)) / img.naturalHeight}%`;
      wrap.append(box);
    }
  }, { once: true });
  img.addEventListener("error", () => { wrap.replaceWith(pictures(item)); }, { once: true });
  img.src = item.links.image;
  wrap.append(img);
  return wrap;
}

function row(item) {
  const tr = document.createElement("tr");
  tr.dataset.item = item.id;
  tr.dataset.status = item.status;
  const isString = item.text != null || item.digits != null;
  const cells = [
    [isString ? fieldPicture(item) : pictures(item)],
    [item.filename],
    [isString ? item.text : item.digit == null ? "–" : String(item.digit)],
    [item.confidence == null ? "–" : percent(item.confidence)],
    flagsOf(item),
  ];
  const classes = ["", "filename", "digit", "num", "flags"];
  tr.append(...cells.map((content, i) => {
    const td = document.createElement("td");
    if (classes[i]) td.className = classes[i];
    td.append(...content);
    return td;
  }));
  return tr;
}

// Load the table again from the start, keeping as many rows as were shown (up to 1000).
async function reloadResults() {
  const limit = Math.min(Math.max(shown, PAGE), 1000);
  const page = await getJSON(`${base}/results?${query({ limit })}`);
  resultsBody.replaceChildren(...page.data.map(row));
  shown = page.data.length;
  cursor = page.next_cursor;
  moreButton.hidden = !page.has_more;
  resultsEmpty.hidden = shown !== 0;
}

async function tick() {
  try {
    renderJob(await getJSON(base));
    const key = `${job.counts.total}:${finishedCount(job.counts)}`;
    if (key !== seen) {
      await reloadResults();
      seen = key;
    }
    showError(errorBox, null);
    return !FINAL.includes(job.status);
  } catch (error) {
    showError(errorBox, error);
    // A job that does not exist will not appear later; anything else may pass.
    return !(error.status === 404 || error.status === 400);
  }
}

filter.addEventListener("change", async () => {
  shown = 0;
  if (job) renderJob(job);
  try {
    await reloadResults();
  } catch (error) {
    showError(errorBox, error);
  }
});

moreButton.addEventListener("click", async () => {
  moreButton.disabled = true;
  try {
    const page = await getJSON(`${base}/results?${query({ limit: PAGE, cursor })}`);
    resultsBody.append(...page.data.map(row));
    shown += page.data.length;
    cursor = page.next_cursor;
    moreButton.hidden = !page.has_more;
  } catch (error) {
    showError(errorBox, error);
  } finally {
    moreButton.disabled = false;
  }
});

cancelButton.addEventListener("click", async () => {
  if (!window.confirm("Cancel this job? Images not yet classified will not be.")) return;
  cancelButton.disabled = true;
  try {
    renderJob(await postForm(`${base}/cancel`, new FormData()));
    await reloadResults();
  } catch (error) {
    showError(errorBox, error);
    cancelButton.disabled = false;
  }
});

$("job-id").textContent = jobId;
poll(tick, 1000);
