/**
 * Which response headers are stored and replayed, and the CORS headers every response carries.
 *
 * The main entry `../idempotency.ts` re-exports what a function author uses (`REPLAY_HEADER`, `corsHeaders`,
 * `withCorsHeaders`); the other headers and the replay rules are for clients and store authors, here.
 *
 * @module
 */

/**
 * Response headers never stored: credentials and challenges (a replay must not hand out a session or ask
 * for one again), hop-by-hop headers (they describe one connection), and the length and encoding of a body
 * that is re-sent as plain bytes (the runtime sets its own).
 *
 * @example Cookies are never replayed
 * ```ts
 * import { UNSAFE_RESPONSE_HEADERS } from "./headers.ts";
 *
 * console.assert(UNSAFE_RESPONSE_HEADERS.has("set-cookie"));
 * ```
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

/**
 * The header saying whether a response is a replay (`true`) or fresh (`false`).
 *
 * @example Tell a replay from a first answer
 * ```ts
 * import { REPLAY_HEADER } from "./headers.ts";
 *
 * const res = new Response("ok", { headers: { [REPLAY_HEADER]: "true" } });
 * console.assert(res.headers.get("X-Idempotency-Replay") === "true");
 * ```
 */
export const REPLAY_HEADER = "x-idempotency-replay";

/**
 * The milliseconds a 409 `REQUEST_IN_PROGRESS` asks the client to wait, next to `Retry-After` (whole
 * seconds): near the first request's expected finish, from the function's recent handler durations.
 *
 * @example Read the hint
 * ```ts
 * import { RETRY_AFTER_MS_HEADER } from "./headers.ts";
 *
 * const waitMs = (res: Response) => Number(res.headers.get(RETRY_AFTER_MS_HEADER) ?? "1000");
 * console.assert(waitMs(new Response(null, { headers: { [RETRY_AFTER_MS_HEADER]: "50" } })) === 50);
 * ```
 */
export const RETRY_AFTER_MS_HEADER = "x-idempotency-retry-after-ms";

/**
 * The header a replay carries when the first response's body was too large to store.
 *
 * @example Detect a replay without its body
 * ```ts
 * import { BODY_OMITTED_HEADER } from "./headers.ts";
 *
 * const omitted = (res: Response) => res.headers.get(BODY_OMITTED_HEADER) === "true";
 * console.assert(!omitted(new Response("ok")));
 * ```
 */
export const BODY_OMITTED_HEADER = "x-idempotency-body-omitted";

/**
 * Whether a response header may be stored and replayed (names compare case-insensitively).
 *
 * @param name A header name.
 * @returns `false` for credentials, hop-by-hop and our own headers.
 * @example Which headers are stored
 * ```ts
 * import { isReplayableHeader } from "./headers.ts";
 *
 * console.assert(isReplayableHeader("ETag") && !isReplayableHeader("Set-Cookie"));
 * ```
 */
export function isReplayableHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return !UNSAFE_RESPONSE_HEADERS.has(lower) && !lower.startsWith(OWN_HEADER_PREFIX);
}

/**
 * The headers of `headers` that are safe to store, with lower-case names.
 *
 * @param headers A response's headers.
 * @returns The safe ones, names lower-cased.
 * @example Filter a response's headers
 * ```ts
 * import { replayableHeaders } from "./headers.ts";
 *
 * const safe = replayableHeaders(new Headers({ etag: "v1", "set-cookie": "s=1" }));
 * console.assert(safe.etag === "v1" && !("set-cookie" in safe));
 * ```
 */
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
 *
 * @example Answer a preflight yourself
 * ```ts
 * import { corsHeaders } from "./headers.ts";
 *
 * const preflight = () => new Response(null, { status: 204, headers: corsHeaders });
 * console.assert(preflight().headers.get("access-control-allow-headers")?.includes("idempotency-key"));
 * ```
 */
export const corsHeaders: Readonly<Record<string, string>> = Object.freeze({
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers":
    "authorization, x-client-info, apikey, content-type, idempotency-key, x-idempotency-key",
  "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
  "Access-Control-Expose-Headers":
    "x-idempotency-replay, retry-after, x-idempotency-body-omitted, x-idempotency-retry-after-ms",
});

/**
 * `response` with every CORS header it does not set itself (a handler's own CORS policy wins).
 *
 * @param response Any response.
 * @returns A copy with the CORS headers it lacked.
 * @example Add CORS to a response
 * ```ts
 * import { withCorsHeaders } from "./headers.ts";
 *
 * const res = withCorsHeaders(new Response("ok"));
 * console.assert(res.headers.get("access-control-allow-origin") === "*");
 * ```
 */
export function withCorsHeaders(response: Response): Response {
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(corsHeaders)) {
    if (!headers.has(name)) headers.set(name, value);
  }
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
