/**
 * CORS at the gateway: preflights are answered here, and a response that lacks CORS headers (the gateway's
 * own errors, or a function that opted out of the helper's) gets them. The header values are the
 * idempotency helper's, so the gateway and the functions allow and expose the same headers.
 */

import { corsHeaders } from "../../supabase/functions/_shared/idempotency.ts";

/** The full set for a preflight (OPTIONS) answer: the helper's CORS headers, cached for a day. */
export const PREFLIGHT_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  ...corsHeaders,
  "Access-Control-Max-Age": "86400",
});

/** `res` with the helper's CORS headers set unless it has `Access-Control-Allow-Origin` already. */
export function withCors(res: Response): Response {
  if (res.headers.has("access-control-allow-origin")) return res;
  try {
    for (const [name, value] of Object.entries(corsHeaders)) res.headers.set(name, value);
    return res;
  } catch {
    // immutable headers (a Response from fetch, or Response.error()): copy it
    return withCors(new Response(res.body, res));
  }
}
