/**
 * run-actions while PostgreSQL is stopped (scripts/test.sh runs tests/outage then): the webhook gets 503
 * STORE_UNAVAILABLE with Retry-After, so Supabase delivers the event again later.
 */
import assert from "node:assert/strict";
import { signJwt } from "../support/jwt.ts";

const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";

Deno.test("run-actions with the database stopped: 503 STORE_UNAVAILABLE with Retry-After", async () => {
  const token = await signJwt({ iss: "supabase-demo", role: "service_role" });
  const res = await fetch(`${API_URL}/functions/v1/run-actions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({
      type: "INSERT",
      table: "training_datasets",
      schema: "public",
      record: { id: crypto.randomUUID(), user_id: null, name: "outage", task: "classification" },
      old_record: null,
    }),
  });
  const body = await res.json();
  assert.equal(res.status, 503, JSON.stringify(body));
  assert.equal(body.error.code, "STORE_UNAVAILABLE");
  assert.ok(Number(res.headers.get("retry-after")) >= 1);
});
