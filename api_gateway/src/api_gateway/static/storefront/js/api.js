// The public API, as the pages use it: JSON in and out, problem documents turned into
// errors a page can show, and the session's tokens (refreshed once when they expire).

const TOKENS = "shop.tokens";

/** An error answer of the API (an RFC 9457 problem document). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.retryAfter = null;
  }

  /** Field name -> message, from a validation problem's `errors`. */
  fieldErrors() {
    const fields = {};
    for (const error of this.errors) {
      const loc = Array.isArray(error.loc) ? error.loc : [];
      const name = loc.filter((part) => part !== "body").join(".");
      if (name && !(name in fields)) fields[name] = error.msg;
    }
    return fields;
  }
}

// Kept for the tab's life only (sessionStorage): closing the tab signs out, and nothing
// outlives the browser session on a shared computer.
function loadTokens() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKENS) || "null");
  } catch {
    return null;
  }
}

let tokens = loadTokens();
let refreshing = null;
const listeners = new Set();

export const session = {
  get signedIn() {
    return tokens !== null;
  },
  get accessToken() {
    return tokens?.access_token ?? null;
  },
  set(pair) {
    tokens = pair ? { access_token: pair.access_token, refresh_token: pair.refresh_token } : null;
    if (tokens) sessionStorage.setItem(TOKENS, JSON.stringify(tokens));
    else sessionStorage.removeItem(TOKENS);
    for (const listener of listeners) listener();
  },
  onChange(listener) {
    listeners.add(listener);
  },
};

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      // fall through: an unreadable body says no more than the status
    }
  }
  return { title: response.statusText, detail: `The server answered ${response.status}.` };
}

async function refresh() {
  // One refresh for every request that found the token expired at the same moment: the
  // refresh token is spent on use, a second refresh with it would sign the user out.
  refreshing ??= (async () => {
    const response = await fetch("/api/v1/auth/refresh", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: tokens.refresh_token }),
    });
    if (!response.ok) {
      session.set(null);
      return false;
    }
    session.set(await response.json());
    return true;
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/**
 * Call the API. `body` is sent as JSON unless it is a URLSearchParams (a form); the
 * answer's JSON is returned (null for 204). An error answer throws an ApiError.
 */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: { accept: "application/json", ...headers }, signal };
  if (body instanceof URLSearchParams) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  let response = await send(path, init);
  if (response.status === 401 && tokens?.refresh_token && (await refresh())) {
    response = await send(path, init);
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    error.retryAfter = response.headers.get("retry-after");
    if (response.status === 401) session.set(null);
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

function send(path, init) {
  const headers = { ...init.headers };
  if (tokens) headers.authorization = `Bearer ${tokens.access_token}`;
  return fetch(path, { ...init, headers });
}

/** Sign in with e-mail and password (the OAuth2 password form). */
export async function signIn(email, password) {
  const form = new URLSearchParams({ username: email, password });
  const pair = await api("/api/v1/auth/token", { method: "POST", body: form });
  session.set(pair);
  return pair;
}

/**
 * Follow a server-sent event stream with the session's token (EventSource cannot send
 * an Authorization header, hence fetch). Calls `onEvent(name, data)` per event; resolves
 * when the server ends the stream, rejects with an ApiError when it cannot be opened.
 */
export async function followEvents(path, onEvent, signal) {
  let response = await send(path, { headers: { accept: "text/event-stream" }, signal });
  if (response.status === 401 && tokens?.refresh_token && (await refresh())) {
    response = await send(path, { headers: { accept: "text/event-stream" }, signal });
  }
  if (!response.ok || !response.body) {
    throw new ApiError(response.status, await problemOf(response));
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end), onEvent);
      buffer = buffer.slice(end + 2);
    }
  }
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return;
  try {
    onEvent(name, JSON.parse(data.join("\n")));
  } catch {
    onEvent(name, data.join("\n"));
  }
}
