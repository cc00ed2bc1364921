// The draw page: a canvas drawn on with pointer events (mouse, pen, touch), sent as a PNG
// to POST /api/v1/predict; the answer is shown as a digit, a confidence and ten bars.
// "A short number" widens the pad and reads the drawing whole: /predict with
// mode=string, answered by the interactive lane like a digit.

import { ApiError, describe, percent, postForm, showError } from "./api.js";

const canvas = document.getElementById("pad");
const ctx = canvas.getContext("2d");
const recogniseButton = document.getElementById("recognise");
const clearButton = document.getElementById("clear");
const statusText = document.getElementById("result-status");
const answer = document.getElementById("answer");
const digitOut = document.getElementById("result-digit");
const confidenceOut = document.getElementById("result-confidence");
const bars = document.getElementById("probabilities");
const errorBox = document.getElementById("error");

const numberMode = document.getElementById("number-mode");

let drawn = false;
let last = null;

numberMode.addEventListener("change", () => {
  canvas.width = numberMode.checked ? 840 : 280;
  canvas.closest(".draw-layout").classList.toggle("wide", numberMode.checked);
  clear();
});

function blank() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = canvas.height / 12;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  drawn = false;
}

// Pointer position in canvas pixels, whatever size the canvas is shown at.
function point(event) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) / box.width) * canvas.width,
    y: ((event.clientY - box.top) / box.height) * canvas.height,
  };
}

function dot(p) {
  ctx.beginPath();
  ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, Math.PI * 2);
  ctx.fill();
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  last = point(event);
  dot(last);
  drawn = true;
});

canvas.addEventListener("pointermove", (event) => {
  if (!last) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  }
});

function endStroke() {
  last = null;
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function renderBars(probabilities, best) {
  bars.replaceChildren();
  for (let d = 0; d < 10; d++) {
    const p = probabilities ? probabilities[d] : 0;
    const li = document.createElement("li");
    li.className = d === best ? "best" : "";
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = String(d);
    const track = document.createElement("span");
    track.className = "bar";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = probabilities ? percent(p) : "–";
    li.append(label, track, value);
    bars.append(li);
  }
}

function clear() {
  blank();
  answer.hidden = true;
  digitOut.textContent = "";
  confidenceOut.textContent = "";
  statusText.textContent = "Nothing recognised yet.";
  showError(errorBox, null);
  renderBars(null, -1);
}

function show(prediction) {
  const found = prediction.status === "done" && prediction.digit != null;
  answer.hidden = !found;
  digitOut.textContent = found ? String(prediction.digit) : "";
  confidenceOut.textContent = found ? percent(prediction.confidence) : "";
  if (!found) {
    statusText.textContent = "No digit found. Try drawing it larger and clearer.";
  } else if (prediction.needs_review) {
    statusText.textContent = "Not sure: this one needs review.";
  } else {
    statusText.textContent = "Recognised.";
  }
  renderBars(prediction.probabilities, found ? prediction.digit : -1);
}

// A number: the same lane as a digit, read whole by the string model.
async function readNumber(blob) {
  const form = new FormData();
  form.append("mode", "string");
  form.append("image", blob, "drawing.png");
  return postForm("/api/v1/predict", form);
}

function showNumber(item) {
  const found = item.status === "done" && item.text;
  answer.hidden = !found;
  digitOut.textContent = found ? item.text : "";
  confidenceOut.textContent = found ? percent(item.confidence) : "";
  statusText.textContent = !found ? "No digits found. Try writing them larger and apart."
    : item.needs_review ? "Not sure: this one needs review." : "Recognised.";
  renderBars(null, -1);
}

async function recognise() {
  if (!drawn) {
    showError(errorBox, new Error("Draw a digit first."));
    return;
  }
  showError(errorBox, null);
  recogniseButton.disabled = true;
  statusText.textContent = "Recognising…";
  try {
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    if (numberMode.checked) {
      showNumber(await readNumber(blob));
      return;
    }
    const form = new FormData();
    form.append("image", blob, "drawing.png");
    show(await postForm("/api/v1/predict", form));
  } catch (error) {
    // 503: the interactive lane is full for a moment (429 is this account's own limit).
    const busy = error instanceof ApiError && error.status === 503;
    statusText.textContent = busy ? "Busy, try again in a moment." : "Could not recognise the drawing.";
    showError(errorBox, describe(error));
  } finally {
    recogniseButton.disabled = false;
  }
}

recogniseButton.addEventListener("click", recognise);
clearButton.addEventListener("click", () => {
  clear();
  canvas.focus();
});
canvas.addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    recognise();
  } else if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    clear();
  }
});

clear();
