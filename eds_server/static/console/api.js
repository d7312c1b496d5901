// The console's only way to the server: the same HTTP API as curl, same rules, same errors.
// Paths are relative to the page (/ui/), so the console also works behind a path prefix.

const TOKEN_KEY = "eds-server.bearer-token";

// The bearer token lives in sessionStorage: it is entered once per browser tab and
// forgotten when the tab closes. It is never put in a URL, a cookie or localStorage.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) ?? "",
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** A refusal from the API (or no answer at all: status 0), with the API's own message. */
export class ApiError extends Error {
  constructor(status, message, problems = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.problems = problems;
  }
}

// After a write from the page, how long it waits for every Envoy polling the service to have it.
export const WAIT_SECONDS = 10;

async function call(method, path, body, { outcomes = false } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch (error) {
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  const text = response.status === 204 ? "" : await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): the status line and the text are all there is.
  }
  // A propagation answers 502 (rejected) and 504 (not yet) with its outcome: not refusals.
  if (!response.ok && !(outcomes && data?.outcome)) {
    const message = data?.message ?? (text.trim() || response.statusText || "no message");
    throw new ApiError(response.status, message, Array.isArray(data?.errors) ? data.errors : []);
  }
  return { status: response.status, data };
}

const service = (name) => `../edsservice/${encodeURIComponent(name)}`;
const host = (name, endpoint) => `${service(name)}/hosts/${encodeURIComponent(endpoint)}`;

export const api = {
  services: () => call("GET", "../edsservice"),
  clients: () => call("GET", "../clients"),
  addHost: (name, body) => call("POST", `${service(name)}/hosts`, body),
  patchHost: (name, endpoint, patch) => call("PATCH", host(name, endpoint), patch),
  removeHost: (name, endpoint) => call("DELETE", host(name, endpoint)),
  deleteService: (name) => call("DELETE", service(name)),
  /** Whether every Envoy polling `name` has `version` (by default the current one), waiting up to WAIT_SECONDS. */
  propagation: (name, version) =>
    call("GET", `${service(name)}/propagation?wait=${WAIT_SECONDS}${version ? `&version=${encodeURIComponent(version)}` : ""}`, undefined, {
      outcomes: true,
    }),
};
