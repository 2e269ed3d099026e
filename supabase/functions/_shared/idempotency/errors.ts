/**
 * The one error family: every error a client sees, from the idempotency wrapper, the JWT check or a function's
 * own validation, is an {@link IdempotencyError} (or a subclass: `JwtError`, the functions' `FunctionError`)
 * with a stable `code`, its HTTP status, and one JSON shape, `{ "error": { "code", "message" } }`.
 *
 * @module
 */

/**
 * Every error code a client can get, with its HTTP status. Stable: clients may switch on them.
 *
 * @example The status of a code
 * ```ts
 * import { ErrorCodes } from "./errors.ts";
 *
 * console.assert(ErrorCodes.KEY_REUSED_WITH_DIFFERENT_REQUEST.status === 422);
 * ```
 */
export const ErrorCodes = {
  /** Both `Idempotency-Key` and `X-Idempotency-Key` were sent, with different values. */
  KEY_CONFLICT: { status: 400 },
  /** The key is not 3-256 characters of letters, digits, `-` and `_`. */
  INVALID_KEY: { status: 400 },
  /** `required: true` and no key was sent. */
  KEY_REQUIRED: { status: 400 },
  /** The body is not JSON, or a field is missing or wrong; the message names the field. */
  INVALID_REQUEST: { status: 400 },
  /**
   * The bearer token is malformed, badly signed or expired; or a key was sent on a call without a user and
   * without the service_role key while `anonymous` is `"reject"`.
   */
  AUTH_REQUIRED: { status: 401 },
  /**
   * The token is validly signed but its user no longer exists in `auth.users` (deleted while the token
   * lives). Retrying cannot help: the client must sign in again.
   */
  USER_NOT_FOUND: { status: 401 },
  /** Something the request refers to (e.g. a dataset) does not exist for this caller. */
  NOT_FOUND: { status: 404 },
  /** The function accepts another HTTP method; `Allow` says which. */
  METHOD_NOT_ALLOWED: { status: 405 },
  /** A request with this key is still running. */
  REQUEST_IN_PROGRESS: { status: 409 },
  /** The key was used before with another request (method, path or body). */
  KEY_REUSED_WITH_DIFFERENT_REQUEST: { status: 422 },
  /** The store could not be reached and `onStoreError` is `"fail-closed"`. */
  STORE_UNAVAILABLE: { status: 503 },
  /** The project's signing keys (its JWKS) could not be fetched, so the token could not be checked. */
  AUTH_UNAVAILABLE: { status: 503 },
  /** A function's own database work could not reach the database or timed out; nothing was written. */
  DATABASE_UNAVAILABLE: { status: 503 },
  /** An action key, action or tool name is malformed (see `parseIdempotencyKey` in `actions.ts`). */
  INVALID_ACTION: { status: 400 },
  /** An action with this key is still running elsewhere and the caller chose not to wait (or gave up). */
  ACTION_IN_PROGRESS: { status: 409 },
  /** The action's last attempt failed and `retryFailed` is `false`: its recorded error is returned. */
  ACTION_FAILED: { status: 409 },
  /** An action setting (`configure`, or an `IDEMPOTENCY_*` environment variable) is out of range. */
  INVALID_CONFIGURATION: { status: 500 },
  /**
   * The handler threw, or the wrapper met an unexpected error. The message never carries the cause. When the
   * request held a key, the key is released so a retry runs again.
   */
  INTERNAL_ERROR: { status: 500 },
} as const;

/**
 * One of the stable error codes.
 *
 * @example Switch on a code
 * ```ts
 * import type { ErrorCode } from "./errors.ts";
 *
 * const retryable = (code: ErrorCode) => code === "REQUEST_IN_PROGRESS" || code === "STORE_UNAVAILABLE";
 * console.assert(retryable("STORE_UNAVAILABLE"));
 * ```
 */
export type ErrorCode = keyof typeof ErrorCodes;

/**
 * Options of an {@link IdempotencyError}.
 *
 * @example A 405 with its Allow header
 * ```ts
 * import { errorResponse, IdempotencyError } from "./errors.ts";
 *
 * const res = errorResponse(new IdempotencyError("METHOD_NOT_ALLOWED", "use POST", { headers: { allow: "POST" } }));
 * console.assert(res.headers.get("allow") === "POST");
 * ```
 */
export interface IdempotencyErrorOptions {
  /**
   * Seconds a client should wait before retrying, sent as `Retry-After`.
   * @default {undefined} no `Retry-After`
   */
  retryAfterSeconds?: number;
  /**
   * Extra response headers (e.g. `Allow` on 405).
   * @default {{}}
   */
  headers?: Record<string, string>;
  /**
   * The underlying error; logged, never sent.
   * @default {undefined}
   */
  cause?: unknown;
}

/**
 * An error a client sees as `{ "error": { "code", "message" } }` with the code's HTTP status.
 *
 * @example Refuse a request
 * ```ts
 * import { errorResponse, IdempotencyError } from "./errors.ts";
 *
 * const error = new IdempotencyError("STORE_UNAVAILABLE", "retry later", { retryAfterSeconds: 2 });
 * const res = errorResponse(error);
 * console.assert(res.status === 503 && res.headers.get("retry-after") === "2");
 * ```
 */
export class IdempotencyError extends Error {
  /** The stable code. */
  readonly code: ErrorCode;
  /** The HTTP status. */
  readonly status: number;
  /** Seconds a client should wait before retrying, sent as `Retry-After`. */
  readonly retryAfterSeconds: number | undefined;
  /** Extra response headers. */
  readonly headers: Readonly<Record<string, string>>;

  /**
   * An error of the family.
   *
   * @param code The stable code; it sets the status.
   * @param message What went wrong, safe to show the client.
   * @param options `Retry-After`, extra headers and the cause.
   */
  constructor(code: ErrorCode, message: string, options: IdempotencyErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "IdempotencyError";
    this.code = code;
    this.status = ErrorCodes[code].status;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.headers = options.headers ?? {};
  }
}

/**
 * The JSON error response for `error`, with its headers and `Retry-After` when it has one.
 *
 * @param error Any error of the family.
 * @param headers More headers (the error's own win over these).
 * @returns The response.
 *
 * @example Answer an error
 * ```ts
 * import { errorResponse, IdempotencyError } from "./errors.ts";
 *
 * const res = errorResponse(new IdempotencyError("INVALID_KEY", "bad key"));
 * console.assert(res.status === 400);
 * ```
 */
export function errorResponse(error: IdempotencyError, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  for (const [name, value] of Object.entries(error.headers)) h.set(name, value);
  h.set("content-type", "application/json");
  if (error.retryAfterSeconds !== undefined) h.set("retry-after", String(error.retryAfterSeconds));
  return new Response(JSON.stringify({ error: { code: error.code, message: error.message } }), {
    status: error.status,
    headers: h,
  });
}
