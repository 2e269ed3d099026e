/**
 * HTTP plumbing the edge functions share: their typed errors, JSON responses, and the wrapper that turns a
 * thrown error into the toolkit's `{ "error": { "code", "message" } }` answer.
 */

import { isConnectionFailure, isStoreOutage, sqlState } from "./idempotency.ts";

/** The functions' own error codes and the status each answers with. Stable: clients may switch on them. */
export const FunctionErrorCodes = {
  /** The body is not JSON, or a field is missing or wrong; the message names the field. */
  INVALID_REQUEST: 400,
  /** The call has no user and is not the service role (an anon key alone). */
  AUTH_REQUIRED: 401,
  /** The token is validly signed, but its user was deleted from `auth.users`; nothing was written. */
  USER_NOT_FOUND: 401,
  /** Something the request refers to (e.g. a dataset) does not exist for this caller. */
  NOT_FOUND: 404,
  /** The function accepts another HTTP method; `Allow` says which. */
  METHOD_NOT_ALLOWED: 405,
  /** The work failed unexpectedly (e.g. the database refused it); nothing was written. */
  INTERNAL_ERROR: 500,
  /** The database could not be reached or timed out; nothing was written; retry after `Retry-After`. */
  DATABASE_UNAVAILABLE: 503,
} as const;

/** One of the functions' error codes. */
export type FunctionErrorCode = keyof typeof FunctionErrorCodes;

/** An error a client sees as `{ "error": { "code", "message" } }` with the code's HTTP status. */
export class FunctionError extends Error {
  /** The stable code. */
  readonly code: FunctionErrorCode;
  /** The HTTP status. */
  readonly status: number;
  /** Extra response headers (e.g. `Allow` on 405). */
  readonly headers: Record<string, string>;

  constructor(
    code: FunctionErrorCode,
    message: string,
    options: { headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "FunctionError";
    this.code = code;
    this.status = FunctionErrorCodes[code];
    this.headers = options.headers ?? {};
  }
}

/** A JSON response with `status`. */
export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...headers, "content-type": "application/json" },
  });
}

/** The JSON error response for `error`. */
export function functionErrorResponse(error: FunctionError): Response {
  return jsonResponse({ error: { code: error.code, message: error.message } }, error.status, error.headers);
}

/**
 * Runs `work`; a {@link FunctionError} becomes its JSON answer, anything else is logged and becomes a
 * 500 `INTERNAL_ERROR` whose message does not leak internals.
 */
export async function respond(work: () => Promise<Response>): Promise<Response> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof FunctionError) return functionErrorResponse(error);
    const classified = classifyDatabaseError(error);
    if (classified) return functionErrorResponse(classified);
    console.error("edge function failed:", error);
    return functionErrorResponse(new FunctionError("INTERNAL_ERROR", "the request could not be completed"));
  }
}

/** Throws 405 `METHOD_NOT_ALLOWED` unless `req` uses `method`. */
export function requireMethod(req: Request, method: string): void {
  if (req.method !== method) {
    throw new FunctionError("METHOD_NOT_ALLOWED", `use ${method}, not ${req.method}`, {
      headers: { allow: method },
    });
  }
}

/**
 * A database failure as the client should see it: the user's row gone (a foreign-key violation on
 * `user_id`) is 401 `USER_NOT_FOUND`; an unreachable or timed-out database is 503 with `Retry-After`;
 * anything else (a constraint, a permission) stays a 500, never reported as an outage.
 */
function classifyDatabaseError(error: unknown): FunctionError | null {
  const state = sqlState(error);
  const constraint = (error as { constraint_name?: unknown } | null)?.constraint_name;
  if (state === "23503" && typeof constraint === "string" && constraint.includes("user_id")) {
    return new FunctionError("USER_NOT_FOUND", "the signed-in user no longer exists; sign in again");
  }
  if (isConnectionFailure(error) || (state !== null && isStoreOutage(error))) {
    console.error("edge function: database unavailable:", error);
    return new FunctionError("DATABASE_UNAVAILABLE", "the database is unavailable; retry later", {
      headers: { "retry-after": "1" },
    });
  }
  return null;
}
