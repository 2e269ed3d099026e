/**
 * The gateway's request routing, free of I/O: `/health`, CORS preflights, JWT checks, and
 * `/functions/v1/<name>` to the function's handler.
 */

import { PREFLIGHT_HEADERS, withCors } from "./cors.ts";
import { type GatewayJwtVerifier, JwtError } from "./jwt.ts";
import { bearerToken, JWKS_PATH } from "../../supabase/functions/_shared/idempotency/jwt.ts";
import { errorResponse, IdempotencyError } from "../../supabase/functions/_shared/idempotency.ts";

/** A function as deployed: its exported handler and whether its callers need a valid JWT. */
export interface DeployedFunction {
  /** The function's exported, wrapped handler. */
  handler: (req: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;
  /** config.toml's `verify_jwt` for it. */
  verifyJwt: boolean;
}

/** What {@link createGatewayHandler} routes with. */
export interface GatewayOptions {
  /** The functions by name. */
  functions: ReadonlyMap<string, DeployedFunction>;
  /** Checks tokens; required when any function has `verifyJwt`. */
  verifier: GatewayJwtVerifier | null;
  /** The JWKS document served at {@link JWKS_PATH} (the local stack's signing keys); none when absent. */
  jwks?: { keys: JsonWebKey[] };
  /** Where a function's unexpected throw is reported; default `console.error`. */
  onError?: (name: string, error: unknown) => void;
}

/** The path prefix Supabase serves functions under. */
export const FUNCTIONS_PREFIX = "/functions/v1/";

/** A JSON error in the toolkit's shape, with CORS headers so that a browser can read it. */
export function gatewayError(status: number, code: string, message: string): Response {
  return withCors(Response.json({ error: { code, message } }, { status }));
}

/** The path of a request URL without parsing all of it (`http://host:port/path?query` → `/path`). */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const end = url.slice(start).search(/[?#]/);
  return end < 0 ? url.slice(start) : url.slice(start, start + end);
}

/** The name in `/functions/v1/<name>[/...]`, or `null` for any other path. */
export function functionNameOf(path: string): string | null {
  if (!path.startsWith(FUNCTIONS_PREFIX)) return null;
  const rest = path.slice(FUNCTIONS_PREFIX.length);
  const slash = rest.indexOf("/");
  const name = slash < 0 ? rest : rest.slice(0, slash);
  return name === "" ? null : name;
}

/** The gateway's request handler. */
export function createGatewayHandler(
  options: GatewayOptions,
): (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response> {
  const { functions, verifier } = options;
  const onError = options.onError ?? ((name, error) => console.error(`function ${name} threw:`, error));
  const names = [...functions.keys()].sort();
  if (!verifier && [...functions.values()].some((f) => f.verifyJwt)) {
    throw new Error("a function verifies JWTs but the gateway has no JWT verifier");
  }

  return async (req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> => {
    const path = pathOf(req.url);
    if (path === "/health") {
      return req.method === "GET" || req.method === "HEAD"
        ? Response.json({ status: "ok", functions: names })
        : gatewayError(405, "METHOD_NOT_ALLOWED", "use GET /health");
    }
    if (path === JWKS_PATH && options.jwks) {
      return Response.json(options.jwks, { headers: { "cache-control": "public, max-age=600" } });
    }
    const name = functionNameOf(path);
    const fn = name === null ? undefined : functions.get(name);
    if (!fn) {
      return gatewayError(
        404,
        "NOT_FOUND",
        name === null ? `no route for ${path}` : `no function named ${name}`,
      );
    }
    if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: PREFLIGHT_HEADERS });
    if (fn.verifyJwt) {
      const token = bearerToken(req);
      if (token === null) {
        return gatewayError(401, "MISSING_AUTHORIZATION", "send Authorization: Bearer <JWT>");
      }
      try {
        await verifier!.verify(token);
      } catch (error) {
        if (error instanceof JwtError) return gatewayError(401, "INVALID_JWT", error.message);
        // the signing keys could not be fetched: an outage (503 AUTH_UNAVAILABLE), not a bad token
        if (error instanceof IdempotencyError) return withCors(errorResponse(error));
        throw error;
      }
    }
    try {
      return withCors(await fn.handler(req, info));
    } catch (error) {
      onError(name!, error);
      return gatewayError(500, "INTERNAL_ERROR", `function ${name} failed`);
    }
  };
}
