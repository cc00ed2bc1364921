// The jobs page: the caller's jobs, newest first, with status and progress. The first page
// is fetched again every second while any job on it is not finished.

import { FINAL, badge, getJSON, poll, showError, when } from "./api.js";

const table = document.getElementById("jobs");
const body = table.querySelector("tbody");
const empty = document.getElementById("empty");
const moreButton = document.getElementById("more");
const errorBox = document.getElementById("error");

const PAGE = 20;
const rows = new Map(); // job id -> <tr>, in display order
let cursor = null;

function finished(counts) {
  return counts.total - counts.pending;
}

function flags(counts) {
  const parts = [];
  if (counts.needs_review) parts.push(badge(`${counts.needs_review} needs review`, "review"));
  if (counts.no_digit) parts.push(badge(`${counts.no_digit} no digit`, "no_digit"));
  if (counts.failed) parts.push(badge(`${counts.failed} failed`, "failed"));
  return parts;
}

function render(job, tr = document.createElement("tr")) {
  tr.dataset.job = job.id;
  tr.dataset.status = job.status;
  const c = job.counts;
  const link = document.createElement("a");
  link.href = job.links.page;
  link.textContent = job.id.replace(/^job_/, "").slice(0, 12);
  link.title = job.id;
  link.setAttribute("aria-label", `Job ${job.id}`);
  const progress = document.createElement("progress");
  progress.max = c.total || 1;
  progress.value = finished(c);
  progress.setAttribute("aria-label", `Progress of job ${job.id}`);
  const count = document.createElement("span");
  count.className = "count";
  count.textContent = `${finished(c)} / ${c.total}${job.open ? " (still open)" : ""}`;
  const cells = [[link], [badge(job.status)], [progress, count], flags(c), [when(job.created_at)]];
  tr.replaceChildren(...cells.map((content, i) => {
    const td = document.createElement("td");
    if (i === 4) td.className = "wide";
    td.append(...content);
    return td;
  }));
  return tr;
}

function show(jobs, { prepend }) {
  const fresh = [];
  for (const job of jobs) {
    if (rows.has(job.id)) {
      render(job, rows.get(job.id));
    } else {
      const tr = render(job);
      rows.set(job.id, tr);
      fresh.push(tr);
    }
  }
  if (prepend) body.prepend(...fresh);
  else body.append(...fresh);
  table.hidden = rows.size === 0;
  empty.hidden = rows.size !== 0;
}

async function refresh() {
  try {
    const page = await getJSON(`/api/v1/jobs?limit=${PAGE}`);
    showError(errorBox, null);
    // New jobs go on top, newest first; known ones are updated in place.
    const known = page.data.filter((j) => rows.has(j.id));
    const fresh = page.data.filter((j) => !rows.has(j.id));
    show(known, { prepend: false });
    show(fresh, { prepend: true });
    if (rows.size === page.data.length) {
      cursor = page.next_cursor;
      moreButton.hidden = !page.has_more;
    }
    return page.data.some((j) => !FINAL.includes(j.status));
  } catch (error) {
    showError(errorBox, error);
    return true; // try again: the server may be restarting
  }
}

moreButton.addEventListener("click", async () => {
  moreButton.disabled = true;
  try {
    const page = await getJSON(`/api/v1/jobs?limit=${PAGE}&cursor=${encodeURIComponent(cursor)}`);
    show(page.data, { prepend: false });
    cursor = page.next_cursor;
    moreButton.hidden = !page.has_more;
  } catch (error) {
    showError(errorBox, error);
  } finally {
    moreButton.disabled = false;
  }
});

poll(refresh, 1000);
