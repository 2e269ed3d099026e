/**
 * Store outage: run by scripts/test.sh while PostgreSQL is stopped. Checks that fail-closed answers 503
 * without running the handler, and fail-open runs the handler, logs and counts the failure.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { PostgresStore, withIdempotency } from "../../supabase/functions/_shared/idempotency.ts";
import { signJwt } from "../support/jwt.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";
const USER_ID = "6f1b3c2e-0000-4000-8000-00000000abcd";

/** Serves `handler` on a free loopback port for the body of `use`. */
async function serving(handler: (req: Request) => Promise<Response>, use: (url: string) => Promise<void>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  try {
    await use(`http://127.0.0.1:${server.addr.port}/functions/v1/outage`);
  } finally {
    await server.shutdown();
  }
}

function keyed(url: string, key: string): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify({ amount: 42 }),
  });
}

Deno.test("the database is really stopped", async () => {
  const sql = postgres(DB_URL, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    await assert.rejects(sql`select 1`, "PostgreSQL still answers: these tests would prove nothing");
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("fail-closed (default): 503 STORE_UNAVAILABLE with Retry-After, the handler does not run", async () => {
  let runs = 0;
  const store = new PostgresStore({ url: DB_URL, connectTimeoutSeconds: 2 });
  const wrapped = withIdempotency(() => {
    runs++;
    return Response.json({ ok: true });
  }, { functionName: "outage", store, getUserId: () => USER_ID, logger: silentLogger() });
  try {
    await serving(wrapped, async (url) => {
      const res = await keyed(url, "outage-closed-1");
      const body = await res.json();
      assert.equal(res.status, 503);
      assert.equal(body.error.code, "STORE_UNAVAILABLE");
      assert.ok(Number(res.headers.get("retry-after")) > 0);
    });
    assert.equal(runs, 0);
    assert.equal(wrapped.metrics.storeErrors, 1);
  } finally {
    await store.close();
  }
});

Deno.test("fail-open: the handler runs once, the failure is logged and counted", async () => {
  let runs = 0;
  const logged: unknown[] = [];
  const store = new PostgresStore({ url: DB_URL, connectTimeoutSeconds: 2 });
  const wrapped = withIdempotency(() => {
    runs++;
    return Response.json({ ok: true }, { status: 201 });
  }, {
    functionName: "outage",
    store,
    onStoreError: "fail-open",
    getUserId: () => USER_ID,
    logger: silentLogger(logged),
  });
  try {
    await serving(wrapped, async (url) => {
      const res = await keyed(url, "outage-open-1");
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { ok: true });
    });
    assert.equal(runs, 1);
    assert.equal(wrapped.metrics.failOpen, 1);
    assert.ok(logged.length >= 1, "the store failure must be logged");
  } finally {
    await store.close();
  }
});

Deno.test("the deployed function over the gateway fails closed while the database is down", async () => {
  const token = await signJwt({ sub: USER_ID, role: "authenticated" });
  const res = await fetch(`${API_URL}/functions/v1/process-document`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "idempotency-key": "outage-gateway-1",
    },
    body: JSON.stringify({ title: "Outage", content: "The database is down." }),
  });
  const body = await res.json();
  assert.equal(res.status, 503);
  assert.equal(body.error.code, "STORE_UNAVAILABLE");
  assert.ok(res.headers.get("retry-after"));
});

function silentLogger(sink: unknown[] = []) {
  const log = (...args: unknown[]) => void sink.push(args);
  return { debug: log, info: log, warn: log, error: log };
}
