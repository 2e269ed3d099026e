/**
 * The retry policy of the idempotent client, as pure functions: which answers are worth another attempt
 * with the same key, and how long to wait before it.
 */

import { RETRY_AFTER_MS_HEADER } from "../supabase/functions/_shared/idempotency/headers.ts";

/**
 * Statuses never retried: the request itself is wrong (400, 413, 422) or the caller may not make it (401,
 * 403). Sending it again with the same key gets the same answer.
 */
export const NEVER_RETRIED: ReadonlySet<number> = new Set([400, 401, 403, 413, 422]);

/**
 * Whether an HTTP answer is worth another attempt with the same key: 408, 425 and 429 (try again later),
 * a 409 only when the server says the key's first request is still running (any other 409 is a real
 * conflict), and every 5xx except 501 (a method the server will never implement).
 *
 * @param status The HTTP status.
 * @param code The `error.code` of a JSON error body, or `null`.
 * @returns `true` when the same request with the same key may succeed later.
 */
export function isRetryableStatus(status: number, code: string | null): boolean {
  if (NEVER_RETRIED.has(status)) return false;
  if (status === 409) return code === "REQUEST_IN_PROGRESS";
  if (status === 408 || status === 425 || status === 429) return true;
  return status >= 500 && status !== 501;
}

/**
 * Exponential backoff with full jitter: a uniform pick in `[0, min(maxMs, baseMs * 2^(attempt-1)))`, so
 * that many clients that failed together do not come back together.
 *
 * @param attempt The attempt that just failed, from 1.
 * @param baseMs The cap of the first pause.
 * @param maxMs The largest cap.
 * @param random A uniform number in [0, 1).
 * @returns The pause in milliseconds.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * cap);
}

/**
 * How long the server asks the client to wait, in milliseconds, or `null` when it does not say: the
 * toolkit's `X-Idempotency-Retry-After-Ms`, else `Retry-After` as seconds or as an HTTP date.
 *
 * @param headers The response headers.
 * @param now The current time in epoch milliseconds (for an HTTP date).
 * @returns Milliseconds to wait (never negative), or `null`.
 */
export function serverDelayMs(headers: Headers, now: number): number | null {
  const ms = headers.get(RETRY_AFTER_MS_HEADER);
  if (ms !== null && /^\d+$/.test(ms.trim())) return Number(ms.trim());
  const value = headers.get("retry-after")?.trim();
  if (value === undefined || value === "") return null;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/**
 * The pause before the next attempt. Without a server hint: the jittered backoff. With one: the hint plus a
 * small jitter (up to a quarter of it, at most `baseMs`), so duplicates told the same finish time do not
 * all arrive in the same millisecond, and a hint of a few milliseconds is not stretched to a full backoff.
 *
 * @param attempt The attempt that just failed, from 1.
 * @param server The server's hint in milliseconds, or `null`.
 * @param baseMs The cap of the first backoff pause.
 * @param maxMs The largest backoff cap.
 * @param random A uniform number in [0, 1).
 * @returns The pause in milliseconds.
 */
export function nextDelayMs(
  attempt: number,
  server: number | null,
  baseMs: number,
  maxMs: number,
  random: () => number,
): number {
  if (server === null) return backoffMs(attempt, baseMs, maxMs, random);
  return server + Math.floor(random() * Math.min(baseMs, Math.max(1, server / 4)));
}
