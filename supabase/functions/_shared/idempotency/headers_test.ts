import assert from "node:assert/strict";
import { corsHeaders, isReplayableHeader, replayableHeaders, withCorsHeaders } from "./headers.ts";

Deno.test("headers: credentials, hop-by-hop, length/encoding and our own headers are not stored", () => {
  const headers = new Headers([
    ["Content-Type", "application/json"],
    ["X-Request-Id", "r-1"],
    ["Location", "/items/1"],
    ["Set-Cookie", "session=secret"],
    ["Set-Cookie", "other=secret"],
    ["Authorization", "Bearer x"],
    ["WWW-Authenticate", "Bearer"],
    ["Proxy-Authenticate", "Basic"],
    ["Connection", "keep-alive"],
    ["Keep-Alive", "timeout=5"],
    ["TE", "trailers"],
    ["Trailer", "Expires"],
    ["Upgrade", "websocket"],
    ["Proxy-Connection", "keep-alive"],
    ["Content-Length", "12"],
    ["Content-Encoding", "gzip"],
    ["X-Idempotency-Replay", "false"],
    ["X-Idempotency-Body-Omitted", "true"],
  ]);
  assert.deepEqual(replayableHeaders(headers), {
    "content-type": "application/json",
    "x-request-id": "r-1",
    location: "/items/1",
  });
});

Deno.test("headers: isReplayableHeader ignores case", () => {
  assert.equal(isReplayableHeader("SET-COOKIE"), false);
  assert.equal(isReplayableHeader("Transfer-Encoding"), false);
  assert.equal(isReplayableHeader("X-IDEMPOTENCY-anything"), false);
  assert.equal(isReplayableHeader("Cache-Control"), true);
});

Deno.test("headers: corsHeaders allow the key headers and expose the replay headers", () => {
  assert.equal(corsHeaders["Access-Control-Allow-Origin"], "*");
  const allowed = corsHeaders["Access-Control-Allow-Headers"]!.split(", ");
  for (const name of ["authorization", "x-client-info", "apikey", "content-type", "idempotency-key"]) {
    assert.ok(allowed.includes(name), name);
  }
  assert.ok(allowed.includes("x-idempotency-key"));
  assert.match(corsHeaders["Access-Control-Allow-Methods"]!, /POST/);
  assert.equal(
    corsHeaders["Access-Control-Expose-Headers"],
    "x-idempotency-replay, retry-after, x-idempotency-body-omitted, x-idempotency-retry-after-ms",
  );
});

Deno.test("headers: withCorsHeaders adds what is missing and keeps the handler's own policy", async () => {
  const response = withCorsHeaders(
    new Response("hi", { status: 201, headers: { "Access-Control-Allow-Origin": "https://app.example" } }),
  );
  assert.equal(response.status, 201);
  assert.equal(response.headers.get("access-control-allow-origin"), "https://app.example");
  assert.ok(response.headers.get("access-control-expose-headers")?.includes("x-idempotency-replay"));
  assert.equal(await response.text(), "hi");
});
