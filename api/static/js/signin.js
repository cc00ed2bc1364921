// Sign in with an API key: POST /api/v1/session (JSON) sets an HttpOnly session cookie;
// the key itself is never stored by the page. Then back to the page that asked.

import { ApiError, describe, showError } from "./api.js";

const form = document.getElementById("signin");
const who = document.getElementById("who");
const errorBox = document.getElementById("error");

function next() {
  const target = new URLSearchParams(location.search).get("next") || "/jobs";
  return target.startsWith("/") && !target.startsWith("//") ? target : "/jobs";
}

async function call(method, body) {
  const headers = { Accept: "application/json" };
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch("/api/v1/session", { method, headers, body });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ApiError(response.status, error.code || "http_" + response.status,
      error.message || `the server answered ${response.status}`);
  }
  return data;
}

async function show() {
  try {
    const me = await call("GET");
    who.textContent = me.signed_in
      ? `Signed in as ${me.account}${me.admin ? " (admin)" : ""}.`
      : `This server is open: you act as the ${me.account} account without a key.`;
  } catch (error) {
    who.textContent = error.status === 401 ? "Not signed in." : describe(error);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(errorBox, null);
  try {
    await call("POST", JSON.stringify({ key: document.getElementById("key").value }));
    location.assign(next());
  } catch (error) {
    showError(errorBox, error);
  }
});

document.getElementById("signout").addEventListener("click", async () => {
  showError(errorBox, null);
  try {
    const me = await call("GET").catch(() => null);
    const headers = { Accept: "application/json" };
    if (me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
    await fetch("/api/v1/session", { method: "DELETE", headers });
  } finally {
    show();
  }
});

show();
