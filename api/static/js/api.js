// Small helpers around the JSON API: every error becomes an ApiError with the server's
// code and message ({"error": {"code", "message"}}), or a plain one for network failures.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function fromBody(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error) {
      return new ApiError(status, body.error.code, body.error.message);
    }
  } catch {
    // not JSON: a proxy or the server in trouble
  }
  return new ApiError(status, "http_" + status, `the server answered ${status}`);
}

// A page signed in with an API key (/signin: an HttpOnly session cookie) sends its
// session's CSRF token with every state-changing call; an open local stack needs none.
// Asked for once, as the module loads, so uploads (XMLHttpRequest) have it at hand.
let csrf = null;
const csrfReady = fetch("/api/v1/session", { headers: { Accept: "application/json" } })
  .then((response) => (response.ok ? response.json() : {}))
  .then((me) => { csrf = me.csrf_token || null; })
  .catch(() => {});

// A server that wants a key sends the person to the sign-in page, and back afterwards.
function signInIfAsked(status) {
  if (status === 401 && location.pathname !== "/signin") {
    location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search));
  }
}

async function request(path, options = {}) {
  let response;
  const headers = { Accept: "application/json" };
  if (options.method && options.method !== "GET") {
    await csrfReady;
    if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  try {
    response = await fetch(path, { headers, ...options });
  } catch {
    throw new ApiError(0, "network", "could not reach the server; check your connection");
  }
  const text = await response.text();
  signInIfAsked(response.status);
  if (!response.ok) throw fromBody(response.status, text);
  return JSON.parse(text);
}

export function getJSON(path) {
  return request(path);
}

export function postForm(path, form) {
  return request(path, { method: "POST", body: form });
}

// POST a FormData with XMLHttpRequest, so that upload progress can be shown.
// onProgress(loadedBytes, totalBytes) is called as the body goes out. An error answer's
// Retry-After (in seconds) comes back as error.retryAfter.
export function uploadForm(path, form, onProgress, headers = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "bad_response", "the server sent an unreadable answer"));
        }
      } else {
        const error = fromBody(xhr.status, xhr.responseText);
        const after = Number(xhr.getResponseHeader("Retry-After"));
        if (after > 0) error.retryAfter = after;
        reject(error);
      }
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "network", "the upload failed: could not reach the server")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was stopped")));
    xhr.send(form);
  });
}

// The text to show a person for any error.
export function describe(error) {
  if (error instanceof ApiError) {
    return error.status ? `${error.message} (${error.status} ${error.code})` : error.message;
  }
  return String(error && error.message ? error.message : error);
}

export function showError(element, error) {
  element.textContent = error ? describe(error) : "";
  element.hidden = !error;
}

export function percent(value, digits = 1) {
  return value == null ? "" : `${(value * 100).toFixed(digits)}%`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export const FINAL = ["succeeded", "failed", "cancelled"];

// A status badge: <span class="badge badge-succeeded">succeeded</span>
export function badge(text, kind = text) {
  const span = document.createElement("span");
  span.className = `badge badge-${kind.replace(/[^a-z_]/g, "")}`;
  span.textContent = text.replace("_", " ");
  return span;
}

// Call `tick` now and then every `ms` after each run finishes, while it returns true.
export function poll(tick, ms = 1000) {
  let stopped = false;
  async function run() {
    if (stopped) return;
    let again = false;
    try {
      again = await tick();
    } finally {
      if (again && !stopped) setTimeout(run, ms);
    }
  }
  run();
  return () => { stopped = true; };
}
