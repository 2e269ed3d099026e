/**
 * Which response headers are stored and replayed, and the CORS headers every response carries.
 */

/**
 * Response headers never stored: credentials and challenges (a replay must not hand out a session or ask
 * for one again), hop-by-hop headers (they describe one connection), and the length and encoding of a body
 * that is re-sent as plain bytes (the runtime sets its own).
 */
export const UNSAFE_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  "set-cookie",
  "authorization",
  "proxy-authenticate",
  "www-authenticate",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "proxy-connection",
  "content-length",
  "content-encoding",
]);

/** Our own headers (`x-idempotency-replay`, ...) are added per response, so a stored copy would be stale. */
const OWN_HEADER_PREFIX = "x-idempotency-";

/** The header saying whether a response is a replay (`true`) or fresh (`false`). */
export const REPLAY_HEADER = "x-idempotency-replay";

/**
 * The milliseconds a 409 `REQUEST_IN_PROGRESS` asks the client to wait, next to `Retry-After` (whole
 * seconds): near the first request's expected finish, from the function's recent handler durations.
 */
export const RETRY_AFTER_MS_HEADER = "x-idempotency-retry-after-ms";

/** The header a replay carries when the first response's body was too large to store. */
export const BODY_OMITTED_HEADER = "x-idempotency-body-omitted";

/** Whether a response header may be stored and replayed (names compare case-insensitively). */
export function isReplayableHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return !UNSAFE_RESPONSE_HEADERS.has(lower) && !lower.startsWith(OWN_HEADER_PREFIX);
}

/** The headers of `headers` that are safe to store, with lower-case names. */
export function replayableHeaders(headers: Headers): Record<string, string> {
  const safe: Record<string, string> = {};
  for (const [name, value] of headers) {
    if (isReplayableHeader(name)) safe[name.toLowerCase()] = value;
  }
  return safe;
}

/**
 * CORS headers for browser clients: the key headers may be sent, and the replay, body-omitted,
 * `Retry-After` and retry-after-ms headers may be read by the page.
 */
export const corsHeaders: Readonly<Record<string, string>> = Object.freeze({
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers":
    "authorization, x-client-info, apikey, content-type, idempotency-key, x-idempotency-key",
  "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
  "Access-Control-Expose-Headers":
    "x-idempotency-replay, retry-after, x-idempotency-body-omitted, x-idempotency-retry-after-ms",
});

/** `response` with every CORS header it does not set itself (a handler's own CORS policy wins). */
export function withCorsHeaders(response: Response): Response {
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(corsHeaders)) {
    if (!headers.has(name)) headers.set(name, value);
  }
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
