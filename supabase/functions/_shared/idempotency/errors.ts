/** Typed errors with a stable `code` and the HTTP status a client gets for them. */

/** Every error code the toolkit answers with. Stable: clients may switch on them. */
export const ErrorCodes = {
  /** Both `Idempotency-Key` and `X-Idempotency-Key` were sent, with different values. */
  KEY_CONFLICT: { status: 400 },
  /** The key is not 3-256 characters of letters, digits, `-` and `_`. */
  INVALID_KEY: { status: 400 },
  /** `required: true` and no key was sent. */
  KEY_REQUIRED: { status: 400 },
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
  /** A request with this key is still running. */
  REQUEST_IN_PROGRESS: { status: 409 },
  /** The key was used before with another request (method, path or body). */
  KEY_REUSED_WITH_DIFFERENT_REQUEST: { status: 422 },
  /** The store could not be reached and `onStoreError` is `"fail-closed"`. */
  STORE_UNAVAILABLE: { status: 503 },
  /**
   * The handler threw, or the wrapper met an unexpected error. The message never carries the cause. When the
   * request held a key, the key is released so a retry runs again.
   */
  INTERNAL_ERROR: { status: 500 },
} as const;

/** One of the stable error codes. */
export type ErrorCode = keyof typeof ErrorCodes;

/** An error a client sees as `{ "error": { "code", "message" } }` with `status`. */
export class IdempotencyError extends Error {
  /** The stable code. */
  readonly code: ErrorCode;
  /** The HTTP status. */
  readonly status: number;
  /** Seconds a client should wait before retrying, sent as `Retry-After`. */
  readonly retryAfterSeconds?: number;

  constructor(
    code: ErrorCode,
    message: string,
    options: { retryAfterSeconds?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "IdempotencyError";
    this.code = code;
    this.status = ErrorCodes[code].status;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** The JSON error response for `error`, with `Retry-After` when it has one. */
export function errorResponse(error: IdempotencyError, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json");
  if (error.retryAfterSeconds !== undefined) h.set("retry-after", String(error.retryAfterSeconds));
  return new Response(JSON.stringify({ error: { code: error.code, message: error.message } }), {
    status: error.status,
    headers: h,
  });
}
