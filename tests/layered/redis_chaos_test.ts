/**
 * The layered store keeps exactly-once while its Redis front is flushed, killed (SIGKILL) and restarted in
 * the middle of a burst of duplicates sent over HTTP to three instances; side effects are counted per key.
 * The test runs its own redis-server on LAYERED_REDIS_PORT (default API_PORT + 10) so killing it touches
 * nothing else.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import { PostgresStore, withIdempotency } from "../../supabase/functions/_shared/idempotency.ts";
import { LayeredStore, RedisFrontCache } from "../../supabase/functions/_shared/idempotency/redis.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const API_PORT = Number(Deno.env.get("API_PORT") ?? 54321);
const PORT = Number(Deno.env.get("LAYERED_REDIS_PORT") ?? API_PORT + 10);
const REDIS_URL = `redis://127.0.0.1:${PORT}`;

function startRedis(): Deno.ChildProcess {
  return new Deno.Command("redis-server", {
    args: ["--bind", "127.0.0.1", "--port", String(PORT), "--save", "", "--appendonly", "no"],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function waitForRedis(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: PORT });
      conn.close();
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`redis-server did not listen on ${PORT}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Production durability (fsync, synchronous_commit, full_page_writes on) for the fault test, as the project's
 * standards ask; `reset` gives the development stack its fast settings back. All three apply on reload.
 */
async function durability(sql: postgres.Sql, to: "on" | "reset"): Promise<void> {
  for (const setting of ["fsync", "synchronous_commit", "full_page_writes"]) {
    await sql.unsafe(to === "on" ? `alter system set ${setting} = on` : `alter system reset ${setting}`);
  }
  await sql`select pg_reload_conf()`;
}

interface Instance {
  store: LayeredStore;
  server: Deno.HttpServer<Deno.NetAddr>;
  url: string;
}

function startInstance(userId: string, runs: Map<string, number>, onStoreError?: "fail-open"): Instance {
  const store = new LayeredStore({
    back: new PostgresStore({ url: DB_URL, max: 4 }),
    // generous timeouts: this test is about the outcome on a loaded machine, not the front's speed
    front: new RedisFrontCache({ url: REDIS_URL, prefix: "chaos:", timeoutMs: 1000, retryMs: 100 }),
  });
  const handler = withIdempotency(async (req) => {
    const key = req.headers.get("idempotency-key") ?? "";
    runs.set(key, (runs.get(key) ?? 0) + 1);
    await sleep(40);
    return Response.json({ key, run: runs.get(key) }, { status: 201 });
  }, {
    functionName: "layered-chaos",
    store,
    getUserId: () => userId,
    logger: { error() {}, warn() {} },
    ...(onStoreError ? { onStoreError } : {}),
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return { store, server, url: `http://127.0.0.1:${server.addr.port}/` };
}

async function post(
  url: string,
  key: string,
): Promise<{ status: number; replay: string | null; body: string }> {
  const res = await fetch(url, { method: "POST", headers: { "idempotency-key": key }, body: "{}" });
  return { status: res.status, replay: res.headers.get("x-idempotency-replay"), body: await res.text() };
}

Deno.test("layered store: Redis flushed, killed and restarted mid-burst; every key's work runs exactly once", async () => {
  let redis = startRedis();
  await waitForRedis();
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  await durability(sql, "on");
  const [user] = await sql<{ id: string }[]>`
    insert into auth.users (email) values (${`chaos-${crypto.randomUUID()}@test.local`}) returning id`;
  const runs = new Map<string, number>();
  const instances = [0, 1, 2].map(() => startInstance(user!.id, runs));
  try {
    // the front really answers before the chaos: a completed key is replayed from Redis by another instance
    const warm = `chaos-warm-${crypto.randomUUID()}`;
    assert.equal((await post(instances[0]!.url, warm)).status, 201);
    for (let i = 0; i < 50 && instances[1]!.store.frontHits === 0; i++) {
      assert.equal((await post(instances[1]!.url, warm)).replay, "true");
      await sleep(20);
    }
    assert.ok(instances[1]!.store.frontHits > 0, "the front never answered a replay");

    const keys = Array.from({ length: 40 }, (_, i) => `chaos-${crypto.randomUUID()}-${i}`);
    const burst = keys.flatMap((key) =>
      Array.from(
        { length: 8 },
        (_, i) => sleep(Math.random() * 2400).then(() => post(instances[i % 3]!.url, key)),
      )
    );
    const frontHits = () => instances.reduce((n, i) => n + i.store.frontHits, 0);
    let hitsBeforeKill = 0;
    const chaos = (async () => {
      await sleep(800);
      const admin = createClient({ url: REDIS_URL });
      await admin.connect();
      await admin.flushAll();
      await admin.close();
      await sleep(600);
      hitsBeforeKill = frontHits();
      redis.kill("SIGKILL");
      await redis.status;
      await sleep(600);
      redis = startRedis();
      await waitForRedis();
    })();
    const results = await Promise.all(burst);
    await chaos;

    assert.ok(hitsBeforeKill > 1, "the front answered duplicates of the burst before it was killed");
    assert.ok(instances.some((i) => i.store.frontErrors > 0), "the kill was felt by the instances");
    for (const key of keys) assert.equal(runs.get(key), 1, `key ${key} ran ${runs.get(key)} times`);
    assert.ok(
      results.every((r) => r.status === 201 || r.status === 409),
      JSON.stringify(results.map((r) => r.status)),
    );

    // every key, retried on every instance after the restart: its first response, and still one run
    const hitsBefore = frontHits();
    for (const round of [0, 1]) {
      for (const key of keys) {
        const again = await post(instances[round % 3]!.url, key);
        assert.equal(again.status, 201);
        assert.equal(again.replay, "true");
        assert.equal(JSON.parse(again.body).run, 1);
      }
    }
    assert.ok(
      frontHits() >= hitsBefore + keys.length,
      "after the restart the front is refilled and answers replays again",
    );
    assert.equal(
      [...runs.values()].reduce((a, b) => a + b, 0),
      keys.length + 1,
      "the burst's keys and the warm-up key",
    );
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from public.idempotency_keys where user_id = ${
      user!.id
    } and status = 'completed'`;
    assert.equal(row?.n, keys.length + 1, "the database holds every claim: it is the record of truth");
  } finally {
    for (const i of instances) {
      await i.server.shutdown();
      await i.store.close();
    }
    redis.kill("SIGKILL");
    await redis.status;
    await sql`delete from auth.users where id = ${user!.id}`;
    await durability(sql, "reset");
    await sql.end();
  }
});

Deno.test("layered store: Redis and the database both down: 503 by default, the handler runs only with fail-open", async () => {
  const runs = new Map<string, number>();
  const make = (onStoreError?: "fail-open") => {
    const store = new LayeredStore({
      // nothing listens on port 1: both layers refuse the connection
      back: new PostgresStore({
        url: "postgresql://postgres:postgres@127.0.0.1:1/postgres",
        connectTimeoutSeconds: 2,
      }),
      front: new RedisFrontCache({ url: "redis://127.0.0.1:1", timeoutMs: 150 }),
    });
    const handler = withIdempotency(() => {
      runs.set("ran", (runs.get("ran") ?? 0) + 1);
      return Response.json({ ok: true }, { status: 201 });
    }, {
      functionName: "layered-down",
      store,
      getUserId: () => "00000000-0000-4000-8000-000000000001",
      logger: { error() {}, warn() {} },
      ...(onStoreError ? { onStoreError } : {}),
    });
    return { store, handler };
  };
  const closed = make();
  const open = make("fail-open");
  try {
    const req = () =>
      new Request("http://x/", { method: "POST", headers: { "idempotency-key": "both-down" }, body: "{}" });
    const refused = await closed.handler(req());
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).error.code, "STORE_UNAVAILABLE");
    assert.equal(runs.get("ran"), undefined, "fail-closed runs nothing");
    const ran = await open.handler(req());
    assert.equal(ran.status, 201);
    await ran.body?.cancel();
    assert.equal(runs.get("ran"), 1);
    assert.equal(open.handler.metrics.failOpen, 1);
    assert.ok(closed.store.frontErrors >= 1 && open.store.frontErrors >= 1);
  } finally {
    await closed.store.close();
    await open.store.close();
  }
});
