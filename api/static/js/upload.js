// The upload page: files, zips or a whole folder go up in batches (at most 500 files and
// 32 MB a request, under the server's 2000-part and 64 MB limits). One batch makes a job
// in one request; more open a job, add the rest, then seal it. Then on to the job's page.

import { bytes, postForm, showError, uploadForm } from "./api.js";

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
  let job = null;
  const progress = (index) => (loaded, requestTotal) => {
    // The request also carries multipart headers: scale its progress to the batch's bytes.
    const batchBytes = parts[index].reduce((sum, f) => sum + f.size, 0);
    const done = sent + (requestTotal ? (loaded / requestTotal) * batchBytes : 0);
    progressBar.value = done / total;
    progressText.textContent = `Sent ${bytes(done)} of ${bytes(total)}` +
      (parts.length > 1 ? ` (part ${index + 1} of ${parts.length})` : "") + ".";
  };
  try {
    for (let i = 0; i < parts.length; i++) {
      if (i === 0) {
        const extra = parts.length > 1 ? { open: "true" } : {};
        job = await uploadForm("/api/v1/jobs", formOf(parts[0], extra), progress(0));
      } else {
        await uploadForm(`/api/v1/jobs/${job.id}/images`, formOf(parts[i]), progress(i));
      }
      sent += parts[i].reduce((sum, f) => sum + f.size, 0);
    }
    if (parts.length > 1) await postForm(`/api/v1/jobs/${job.id}/seal`, new FormData());
  } catch (error) {
    if (job && parts.length > 1) {
      // A half-sent open job would never finish: cancel it rather than leave it hanging.
      await postForm(`/api/v1/jobs/${job.id}/cancel`, new FormData()).catch(() => {});
    }
    throw error;
  }
  progressBar.value = 1;
  progressText.textContent = `Sent ${bytes(total)}. Opening the job…`;
  return job;
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
    const job = await upload(files);
    window.location.assign(job.links.page);
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
