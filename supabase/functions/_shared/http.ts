/**
 * HTTP plumbing the edge functions share: their typed errors (members of the toolkit's one error family),
 * JSON responses, and the wrapper that turns a thrown error into `{ "error": { "code", "message" } }`.
 */

import { type ErrorCode, errorResponse, IdempotencyError } from "./idempotency/errors.ts";
import { sqlState } from "./idempotency/_outage.ts";
import { isDatabaseOutage } from "./idempotency/_postgres_client.ts";

/** The codes the functions' own errors use (a subset of the family's `ErrorCodes`). */
export type FunctionErrorCode = Extract<
  ErrorCode,
  | "INVALID_REQUEST"
  | "AUTH_REQUIRED"
  | "USER_NOT_FOUND"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "INTERNAL_ERROR"
  | "DATABASE_UNAVAILABLE"
>;

/** A function's own error: an {@link IdempotencyError}, so it has the family's code, status and JSON shape. */
export class FunctionError extends IdempotencyError {
  constructor(
    code: FunctionErrorCode,
    message: string,
    options: { headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(code, message, options);
    this.name = "FunctionError";
  }
}

/** A JSON response with `status`. */
export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...headers, "content-type": "application/json" },
  });
}

/**
 * Runs `work`; an error of the family (a {@link FunctionError}, a refused JWT, ...) becomes its JSON answer,
 * a database failure is classified (see {@link classifyDatabaseError}), anything else is logged and becomes
 * a 500 `INTERNAL_ERROR` whose message does not leak internals.
 */
export async function respond(work: () => Promise<Response>): Promise<Response> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof IdempotencyError) return errorResponse(error);
    const classified = classifyDatabaseError(error);
    if (classified) return errorResponse(classified);
    console.error("edge function failed:", error);
    return errorResponse(new FunctionError("INTERNAL_ERROR", "the request could not be completed"));
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
export function classifyDatabaseError(error: unknown): FunctionError | null {
  const state = sqlState(error);
  const constraint = (error as { constraint_name?: unknown } | null)?.constraint_name;
  if (state === "23503" && typeof constraint === "string" && constraint.includes("user_id")) {
    return new FunctionError("USER_NOT_FOUND", "the signed-in user no longer exists; sign in again");
  }
  if (isDatabaseOutage(error)) {
    console.error("edge function: database unavailable:", error);
    return new FunctionError("DATABASE_UNAVAILABLE", "the database is unavailable; retry later", {
      headers: { "retry-after": "1" },
    });
  }
  return null;
}
