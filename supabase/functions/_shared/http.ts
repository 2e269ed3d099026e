/**
 * HTTP plumbing the edge functions share: their typed errors (members of the toolkit's one error family),
 * JSON responses, and the wrapper that turns a thrown error into `{ "error": { "code", "message" } }`.
 */

import { type ErrorCode, errorResponse, IdempotencyError } from "./idempotency.ts";

/** The codes the functions' own errors use (a subset of the family's `ErrorCodes`). */
export type FunctionErrorCode = Extract<
  ErrorCode,
  "INVALID_REQUEST" | "AUTH_REQUIRED" | "NOT_FOUND" | "METHOD_NOT_ALLOWED" | "INTERNAL_ERROR"
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
 * anything else is logged and becomes a 500 `INTERNAL_ERROR` whose message does not leak internals.
 */
export async function respond(work: () => Promise<Response>): Promise<Response> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof IdempotencyError) return errorResponse(error);
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
