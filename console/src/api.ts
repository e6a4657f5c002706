// The console's client of the front door's JSON API (same origin): bearer tokens kept for
// the tab's life, one refresh on an expired token, errors as the google.rpc.Status body.

export interface RpcError {
  code: number;
  message: string;
  details: Array<Record<string, unknown>>;
}

export class ApiError extends Error {
  constructor(readonly httpStatus: number, readonly status: RpcError) {
    super(status.message || `HTTP ${httpStatus}`);
  }
}

const ACCESS = "appstack.access";
const REFRESH = "appstack.refresh";

export function signedIn(): boolean {
  return sessionStorage.getItem(ACCESS) !== null;
}

export function signOut(): void {
  const refresh = sessionStorage.getItem(REFRESH);
  sessionStorage.removeItem(ACCESS);
  sessionStorage.removeItem(REFRESH);
  if (refresh) {
    void fetch("/v1/auth/logout", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: refresh }),
    });
  }
}

function keep(tokens: { accessToken: string; refreshToken: string }): void {
  sessionStorage.setItem(ACCESS, tokens.accessToken);
  if (tokens.refreshToken) sessionStorage.setItem(REFRESH, tokens.refreshToken);
}

async function send(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = sessionStorage.getItem(ACCESS);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function refresh(): Promise<boolean> {
  const token = sessionStorage.getItem(REFRESH);
  if (!token) return false;
  const answer = await fetch("/v1/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refreshToken: token }),
  });
  if (!answer.ok) return false;
  keep(await answer.json());
  return true;
}

async function failure(answer: Response): Promise<ApiError> {
  let status: RpcError = { code: 2, message: `HTTP ${answer.status}`, details: [] };
  try {
    status = await answer.json();
  } catch {
    // Not JSON (a proxy's page): keep the HTTP status.
  }
  return new ApiError(answer.status, status);
}

/** Calls a JSON route; on 401 refreshes the session once and retries. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let answer = await send(method, path, body);
  if (answer.status === 401 && (await refresh())) answer = await send(method, path, body);
  if (!answer.ok) throw await failure(answer);
  return (await answer.json()) as T;
}

export async function signIn(email: string, password: string): Promise<void> {
  keep(await call("POST", "/v1/auth/login", { email, password }));
}

export async function signUp(email: string, password: string): Promise<void> {
  await call("POST", "/v1/auth/sign-up", { email, password });
}

/**
 * Follows a Server-Sent Events stream (fetch, so the bearer token can be sent): calls
 * `onMessage` per `message` event; resolves with the closing status. `signal` stops it.
 */
export async function follow<T>(
  path: string,
  onMessage: (message: T) => void,
  signal: AbortSignal,
): Promise<RpcError> {
  const token = sessionStorage.getItem(ACCESS);
  const answer = await fetch(path, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal,
  });
  if (!answer.ok || !answer.body) throw await failure(answer);
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { code: 14, message: "the stream was cut", details: [] };
    buffered += value;
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (!data) continue;
      if (name === "message") onMessage(JSON.parse(data) as T);
      else return JSON.parse(data) as RpcError;
    }
  }
}
