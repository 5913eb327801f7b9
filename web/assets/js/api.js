// The dashboard's only way to the server: JSON over fetch, and the graph's event stream.

/** An answer the server refused; `message` is the server's own `error` text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = null;

/** Calls `callback` whenever the server answers 401 (no login, or the session ended). */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (response.status === 401 && unauthorized) unauthorized();
  if (!response.ok) {
    const message = body && typeof body.error === 'string' ? body.error : text || response.statusText;
    throw new ApiError(response.status, message);
  }
  return body;
}

export async function getJson(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, value);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  return answer(await fetch(url, {headers: {accept: 'application/json'}}));
}

/** Sends `body` (when given) as JSON with `method`; resolves to the answer's JSON, null when empty. */
export async function sendJson(method, path, body) {
  const headers = {accept: 'application/json'};
  const init = {method, headers};
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return answer(await fetch(path, init));
}

/** Runs SQL; resolves to `{columns, rows, truncated}`, rejects with the server's error. */
export async function sql(text) {
  return answer(
    await fetch('/api/sql', {
      method: 'POST',
      headers: {'content-type': 'application/json', accept: 'application/json'},
      body: JSON.stringify({sql: text}),
    }),
  );
}

/** Rows of a SQL answer as objects keyed by column name. */
export function records(result) {
  const names = result.columns.map((c) => c.name);
  return result.rows.map((row) => Object.fromEntries(names.map((n, i) => [n, row[i]])));
}

/** Logs in with a token; the server keeps the session in an HttpOnly cookie. */
export async function login(token) {
  return answer(
    await fetch('/api/login', {
      method: 'POST',
      headers: {'content-type': 'application/json', accept: 'application/json'},
      body: JSON.stringify({token}),
    }),
  );
}

export async function logout() {
  await fetch('/api/logout', {method: 'POST'});
}
