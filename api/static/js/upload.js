// The upload page: files, zips or a whole folder go up in batches (at most 500 files and
// 32 MB a request, under the server's 2000-part and 64 MB limits). One batch makes a job
// in one request; more open a job, add each batch, then seal it. Then on to the job's page.
//
// Every request carries an Idempotency-Key (one per batch) and is tried again, with
// backoff or as long as Retry-After asks, through network errors, 429 and 5xx answers,
// for at most RETRY_MINUTES; a batch the server refuses (400, 413) fails alone and the
// rest goes on. A reload starts afresh: this page retries, it does not resume.

import { ApiError, bytes, showError, uploadForm } from "./api.js";

const RETRY_MINUTES = 10;
const BACKOFF_MS = 500;
const BACKOFF_MAX_MS = 30000;

const MAX_FILES = 500;
const MAX_BYTES = 32 * 1024 * 1024;
const KEEP = /\.(png|jpe?g|bmp|tiff?|gif|webp|zip)$/i;

const form = document.getElementById("upload-form");
const filesInput = document.getElementById("files");
const folderInput = document.getElementById("folder");
const selection = document.getElementById("selection");
const startButton = document.getElementById("start");
const resetButton = document.getElementById("reset");
const progressBox = document.getElementById("progress-box");
const progressBar = document.getElementById("progress");
const progressText = document.getElementById("progress-text");
const errorBox = document.getElementById("error");

// The name sent for a file: its path inside the chosen folder, if it came from one.
const nameOf = (file) => file.webkitRelativePath || file.name;

function hidden(file) {
  return nameOf(file).split("/").some((part) => part.startsWith(".") || part === "__MACOSX");
}

// Files picked one by one are all sent (the server says which ones are not images);
// from a folder, only images and zips, so that stray notes and .DS_Store stay at home.
function chosen() {
  const picked = [...filesInput.files];
  const fromFolder = [...folderInput.files];
  const kept = fromFolder.filter((f) => !hidden(f) && KEEP.test(f.name));
  return { files: [...picked, ...kept], skipped: fromFolder.length - kept.length };
}

function describeSelection() {
  const { files, skipped } = chosen();
  const total = files.reduce((sum, f) => sum + f.size, 0);
  let text = files.length
    ? `${files.length} file${files.length === 1 ? "" : "s"} chosen, ${bytes(total)}.`
    : "No files chosen.";
  if (skipped) text += ` ${skipped} file${skipped === 1 ? " is" : "s are"} skipped (not images or zips).`;
  selection.textContent = text;
  startButton.disabled = files.length === 0;
}

export function batches(files, maxFiles = MAX_FILES, maxBytes = MAX_BYTES) {
  const out = [];
  let current = [];
  let size = 0;
  for (const file of files) {
    if (current.length && (current.length >= maxFiles || size + file.size > maxBytes)) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(file);
    size += file.size;
  }
  if (current.length) out.push(current);
  return out;
}

function formOf(batch, extra = {}) {
  const data = new FormData();
  for (const [key, value] of Object.entries(extra)) data.append(key, value);
  for (const file of batch) data.append("files", file, nameOf(file));
  return data;
}

function newKey() {
  // crypto.randomUUID needs a secure context; getRandomValues works over plain http too.
  const bytes16 = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes16].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function transient(error) {
  return error instanceof ApiError &&
    (error.status === 0 || error.status === 429 || error.status >= 500) &&
    error.code !== "aborted";
}

// One request, tried again through network errors, 429 and 5xx for at most RETRY_MINUTES.
// send() builds the request afresh each time (a FormData can be sent again).
async function withRetries(send, what, onRetry) {
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (error) {
      if (!transient(error)) throw error;
      const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MS * 2 ** (attempt - 1)) *
        (0.5 + Math.random() / 2);
      const wait = Math.max(backoff, (error.retryAfter || 0) * 1000);
      if (Date.now() + wait - started > RETRY_MINUTES * 60000) {
        throw new ApiError(error.status, error.code,
          `gave up on ${what} after ${RETRY_MINUTES} min of retries: ${error.message}`);
      }
      onRetry(`${error.message}; trying again in ${(wait / 1000).toFixed(1)} s`);
      await sleep(wait);
    }
  }
}

function setBusy(busy) {
  startButton.disabled = busy;
  resetButton.disabled = busy;
  filesInput.disabled = busy;
  folderInput.disabled = busy;
}

async function upload(files) {
  const parts = batches(files);
  const total = files.reduce((sum, f) => sum + f.size, 0) || 1;
  let sent = 0;
  const refused = [];
  const progress = (index) => (loaded, requestTotal) => {
    // The request also carries multipart headers: scale its progress to the batch's bytes.
    const batchBytes = parts[index].reduce((sum, f) => sum + f.size, 0);
    const done = sent + (requestTotal ? (loaded / requestTotal) * batchBytes : 0);
    progressBar.value = done / total;
    progressText.textContent = `Sent ${bytes(done)} of ${bytes(total)}` +
      (parts.length > 1 ? ` (part ${index + 1} of ${parts.length})` : "") + ".";
  };
  const retrying = (text) => { progressText.textContent = `Connection trouble: ${text}.`; };
  const post = (path, form, onProgress, key) =>
    withRetries(() => uploadForm(path, form(), onProgress, { "Idempotency-Key": key }),
      `POST ${path}`, retrying);

  // digit: each image one digit; string: each image a number read whole.
  const mode = document.querySelector('input[name="mode"]:checked')?.value || "digit";
  if (parts.length === 1) {
    // One request: the whole job, or the server's reason for refusing it.
    const job = await post("/api/v1/jobs", () => formOf(parts[0], { mode }), progress(0),
      newKey());
    return { job, refused };
  }
  const job = await post("/api/v1/jobs", () => formOf([], { open: "true", mode }), () => {},
    newKey());
  for (let i = 0; i < parts.length; i++) {
    try {
      await post(`/api/v1/jobs/${job.id}/images`, () => formOf(parts[i]), progress(i),
        newKey());
    } catch (error) {
      if (!(error instanceof ApiError && (error.status === 400 || error.status === 413))) {
        // The job stays open: the server expires it if nobody comes back.
        throw error;
      }
      refused.push(`part ${i + 1} (${parts[i].length} files): ${error.message}`);
    }
    sent += parts[i].reduce((sum, f) => sum + f.size, 0);
  }
  await post(`/api/v1/jobs/${job.id}/seal`, () => new FormData(), () => {}, newKey());
  progressBar.value = 1;
  progressText.textContent = `Sent ${bytes(total)}. Opening the job…`;
  return { job, refused };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const { files } = chosen();
  if (!files.length) return;
  showError(errorBox, null);
  setBusy(true);
  progressBox.hidden = false;
  progressBar.value = 0;
  progressText.textContent = "Starting the upload…";
  try {
    const { job, refused } = await upload(files);
    if (!refused.length) {
      window.location.assign(job.links.page);
      return;
    }
    // Some batches were refused: say which before moving on, with a link to the job.
    progressText.textContent = "";
    const link = document.createElement("a");
    link.href = job.links.page;
    link.textContent = "Open the job";
    progressText.append(`The server refused ${refused.join("; ")}. The rest went up. `, link);
    setBusy(false);
  } catch (error) {
    progressText.textContent = "The upload did not finish.";
    showError(errorBox, error);
    setBusy(false);
  }
});

filesInput.addEventListener("change", describeSelection);
folderInput.addEventListener("change", describeSelection);
resetButton.addEventListener("click", () => {
  form.reset();
  progressBox.hidden = true;
  showError(errorBox, null);
  describeSelection();
});

describeSelection();
