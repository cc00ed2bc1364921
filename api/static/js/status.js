// The status page: GET /api/v1/status every 2 seconds. Workers online per queue, queue
// depths, pending images, jobs running, and images per second over the last ten minutes
// drawn as an SVG bar chart (built with DOM calls, like everything on these pages).

import { getJSON, poll, showError, when } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const errorBox = document.getElementById("error");
const partErrors = document.getElementById("part-errors");
const queueBody = document.querySelector("#queues tbody");
const chart = document.getElementById("chart");
const caption = document.getElementById("chart-caption");

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function number(n, digits = 0) {
  return n == null ? "–" : n.toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function duration(seconds) {
  if (seconds == null) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function svg(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// A bar per bucket, scaled to the busiest one; a label for the peak and both ends.
export function drawChart(throughput) {
  const points = throughput.points;
  const width = 600;
  const height = 180;
  const left = 44;
  const bottom = 22;
  const plotW = width - left - 4;
  const plotH = height - bottom - 8;
  const peak = Math.max(...points.map((p) => p.per_s), 0);
  const top = peak > 0 ? peak : 1;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", class: "throughput",
    "aria-label": `Images per second over the last ${throughput.window_s / 60} minutes: `
      + `peak ${number(peak, 1)}, last minute ${number(throughput.last_minute_per_s, 1)}`,
  });
  const axis = svg("line", { x1: left, y1: 8 + plotH, x2: width - 4, y2: 8 + plotH,
                              class: "axis" });
  root.append(axis);
  for (const [value, y] of [[top, 8], [0, 8 + plotH]]) {
    const label = svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "tick" });
    label.textContent = number(value, value < 10 ? 1 : 0);
    root.append(label);
  }
  const step = plotW / points.length;
  points.forEach((point, i) => {
    const h = (point.per_s / top) * plotH;
    const bar = svg("rect", {
      x: left + i * step + 1, y: 8 + plotH - h, width: Math.max(1, step - 2), height: h,
      class: "column", "data-images": point.images,
    });
    const title = svg("title");
    title.textContent = `${clock(point.start)}: ${number(point.per_s, 1)} images/s `
      + `(${point.images} images)`;
    bar.append(title);
    root.append(bar);
  });
  for (const [iso, x, anchor] of [[points[0].start, left, "start"],
    [points[points.length - 1].start, width - 4, "end"]]) {
    const label = svg("text", { x, y: height - 6, "text-anchor": anchor, class: "tick" });
    label.textContent = clock(iso);
    root.append(label);
  }
  chart.replaceChildren(root);
  caption.textContent = `${number(throughput.total)} images finished in the last `
    + `${throughput.window_s / 60} minutes; bars of ${throughput.bucket_s} s, from the `
    + "database's finish times.";
}

function queueRow(name, queue) {
  const tr = document.createElement("tr");
  tr.dataset.queue = name;
  const cells = [name, number(queue.workers), number(queue.processes),
    queue.messages == null ? "–" : number(queue.messages), queue.nodes.join(", ") || "none"];
  tr.replaceChildren(...cells.map((value, i) => {
    const td = document.createElement(i === 0 ? "th" : "td");
    if (i === 0) td.scope = "row";
    if (i >= 1 && i <= 3) td.className = "num";
    if (i === 4) td.className = "wide";
    td.textContent = value;
    return td;
  }));
  if (!queue.workers) tr.classList.add("no-workers");
  return tr;
}

function show(status) {
  const problems = Object.entries(status.errors || {});
  partErrors.textContent = problems.map(([part, why]) => `${part}: ${why}`).join("; ");
  partErrors.hidden = problems.length === 0;

  text("rate", status.throughput ? number(status.throughput.last_minute_per_s, 1) : "–");
  text("pending", number(status.pending));
  const oldest = document.getElementById("oldest");
  if (status.oldest_pending) {
    const link = document.createElement("a");
    link.href = `/jobs/${status.oldest_pending.job_id}`;
    link.textContent = duration(status.oldest_pending.age_s);
    link.title = `queued ${when(status.oldest_pending.queued_at)}, job `
      + status.oldest_pending.job_id;
    oldest.replaceChildren(link);
  } else {
    oldest.textContent = status.pending === 0 ? "none" : "–";
  }
  text("running", status.jobs ? number(status.jobs.running) : "–");
  text("jobs-line", status.jobs
    ? `Jobs: ${status.jobs.queued} queued, ${status.jobs.running} running, `
      + `${status.jobs.succeeded} succeeded, ${status.jobs.failed} failed, `
      + `${status.jobs.cancelled} cancelled.`
    : "");

  if (status.queues) {
    queueBody.replaceChildren(...Object.entries(status.queues)
      .map(([name, queue]) => queueRow(name, queue)));
    text("unacked", `${number(status.unacked)} message(s) delivered to a worker and not `
      + "yet acknowledged.");
  }
  if (status.throughput) drawChart(status.throughput);
  text("updated", new Date(status.generated_at).toLocaleTimeString());
}

async function refresh() {
  try {
    show(await getJSON("/api/v1/status"));
    showError(errorBox, null);
  } catch (error) {
    showError(errorBox, error);
  }
  return true; // a status page keeps watching
}

poll(refresh, 2000);
