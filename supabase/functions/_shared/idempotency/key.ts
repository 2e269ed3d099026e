/**
 * The idempotency key of a request: `Idempotency-Key` (the IETF draft's name) or `X-Idempotency-Key` (the
 * older convention), sent bare (`abc`) or as an RFC 8941 Structured-Field string (`"abc"`).
 */

import { IdempotencyError } from "./errors.ts";

/**
 * The header names read, in order of preference.
 *
 * @example The headers read
 * ```ts
 * import { IDEMPOTENCY_KEY_HEADERS } from "./key.ts";
 *
 * console.assert(IDEMPOTENCY_KEY_HEADERS[0] === "idempotency-key");
 * ```
 */
export const IDEMPOTENCY_KEY_HEADERS = ["idempotency-key", "x-idempotency-key"] as const;

/** 3-256 characters of letters, digits, `_` and `-`: the same rule as the table's check constraint. */
const KEY_PATTERN = /^[A-Za-z0-9_-]{3,256}$/;

/**
 * Whether `key` is a string of 3-256 characters of `[A-Za-z0-9_-]`.
 *
 * @param key Anything.
 * @returns Whether it is a valid key.
 * @example Validate a key from a queue message
 * ```ts
 * import { isValidIdempotencyKey } from "./key.ts";
 *
 * console.assert(isValidIdempotencyKey("order-42") && !isValidIdempotencyKey("no spaces"));
 * ```
 */
export function isValidIdempotencyKey(key: unknown): key is string {
  return typeof key === "string" && KEY_PATTERN.test(key);
}

/**
 * A new random key, `idem_<uuid>`, for a client to mint once per operation and send on every retry.
 *
 * @returns A new key.
 * @example Mint a key once per operation
 * ```ts
 * import { generateIdempotencyKey, isValidIdempotencyKey } from "./key.ts";
 *
 * const key = generateIdempotencyKey(); // keep it, and send it on every retry
 * console.assert(isValidIdempotencyKey(key));
 * ```
 */
export function generateIdempotencyKey(): string {
  return `idem_${crypto.randomUUID()}`;
}

/**
 * The key `req` carries, or `null` when it carries none.
 *
 * @throws {IdempotencyError} `KEY_CONFLICT` when both headers are sent with different keys; `INVALID_KEY`
 * when a value is not a valid key (bare or quoted).
 *
 * @param req The request.
 * @returns The key, or `null`.
 * @example Read the key a client sent
 * ```ts
 * import { getIdempotencyKey } from "./key.ts";
 *
 * const req = new Request("http://localhost/", { headers: { "Idempotency-Key": '"order-42"' } });
 * console.assert(getIdempotencyKey(req) === "order-42");
 * ```
 */
export function getIdempotencyKey(req: Request): string | null {
  const keys = IDEMPOTENCY_KEY_HEADERS
    .map((name) => req.headers.get(name))
    .filter((value): value is string => value !== null)
    .map(parseKeyValue);
  if (keys.length === 2 && keys[0] !== keys[1]) {
    throw new IdempotencyError(
      "KEY_CONFLICT",
      "Idempotency-Key and X-Idempotency-Key carry different keys; send one of them",
    );
  }
  return keys[0] ?? null;
}

/** One header value as a validated key: a quoted Structured-Field string is unquoted first. */
function parseKeyValue(raw: string): string {
  const trimmed = raw.trim();
  const key = trimmed.startsWith('"') ? unquoteSfString(trimmed) : trimmed;
  if (key === null || !isValidIdempotencyKey(key)) {
    throw new IdempotencyError(
      "INVALID_KEY",
      "The idempotency key must be 3-256 characters of letters, digits, '-' and '_'",
    );
  }
  return key;
}

/**
 * The content of an RFC 8941 sf-string (`"..."` where only `\"` and `\\` are escapes), or `null` when the
 * value is not exactly one well-formed string (unterminated, a bad escape, or anything after the quote).
 */
function unquoteSfString(value: string): string | null {
  let out = "";
  for (let i = 1; i < value.length; i++) {
    const char = value[i];
    if (char === '"') return i === value.length - 1 ? out : null;
    if (char === "\\") {
      const next = value[++i];
      if (next !== '"' && next !== "\\") return null;
      out += next;
    } else {
      out += char;
    }
  }
  return null;
}
