import assert from "node:assert/strict";
import postgres from "postgres";
import { runStoreContract } from "./contract_suite.ts";
import { type FrontCache, type FrontEntry, LayeredStore, RedisFrontCache } from "./layered.ts";
import { PostgresStore } from "./postgres.ts";
import { MemoryStore } from "./memory.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";

runStoreContract(
  "layered",
  ({ poolSize }) =>
    Promise.resolve({
      store: new LayeredStore({
        back: new PostgresStore({ url: DB_URL, max: poolSize }),
        front: new RedisFrontCache({ url: REDIS_URL, prefix: `idem-front-test-${crypto.randomUUID()}:` }),
      }),
    }),
  {
    async fixture() {
      const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
      const users: [string, string] = [crypto.randomUUID(), crypto.randomUUID()];
      await sql`insert into auth.users ${
        sql(users.map((id) => ({ id, email: `layered-${id}@example.test` })))
      }`;
      return {
        users,
        async release(keys) {
          try {
            await sql`delete from public.idempotency_keys where idempotency_key = any(${keys}::text[])`;
            await sql`delete from auth.users where id = any(${users}::uuid[])`;
          } finally {
            await sql.end();
          }
        },
      };
    },
  },
);

/** A front in a Map that can be made to fail, to watch what the layered store does with it. */
class MapFront implements FrontCache {
  readonly entries = new Map<string, FrontEntry>();
  down = false;
  lookup(id: string, fingerprint: string) {
    if (this.down) return Promise.reject(new Error("down"));
    const entry = this.entries.get(id);
    if (entry?.state === "completed" && entry.fingerprint === fingerprint) entry.replayCount++;
    return Promise.resolve(entry ?? null);
  }
  set(id: string, entry: FrontEntry) {
    if (this.down) return Promise.reject(new Error("down"));
    this.entries.set(id, entry);
    return Promise.resolve();
  }
  delete(id: string) {
    if (this.down) return Promise.reject(new Error("down"));
    this.entries.delete(id);
    return Promise.resolve();
  }
  close() {
    return Promise.resolve();
  }
}

const INPUT = {
  key: "layered-key",
  userId: "u1",
  functionName: "f",
  fingerprint: "d".repeat(64),
  ttlSeconds: 60,
  lockTimeoutSeconds: 30,
};
const RESPONSE = {
  status: 201,
  headers: { "content-type": "text/plain" },
  body: new Uint8Array([104, 105]),
  encoding: "identity" as const,
};

Deno.test("layered: replays and in-flight checks come from the front; claims only from the back", async () => {
  const back = new MemoryStore();
  const front = new MapFront();
  const store = new LayeredStore({ back, front });
  const first = await store.begin(INPUT);
  assert.equal(first.outcome, "started");
  if (first.outcome !== "started") return;
  assert.equal((await store.begin(INPUT)).outcome, "in_progress");
  assert.equal(store.frontHits, 1, "the in-flight check was the front's");
  assert.ok(await store.complete({ recordId: first.recordId, leaseToken: first.leaseToken }, RESPONSE));
  const replay = await store.begin(INPUT);
  assert.equal(replay.outcome, "replay");
  if (replay.outcome === "replay") assert.deepEqual([...replay.response.body], [104, 105]);
  assert.equal(store.frontHits, 2);
  assert.equal((await back.status(INPUT))?.replayCount, 0, "the back was not asked");
});

Deno.test("layered: a front that is down or flushed changes speed, never the outcome", async () => {
  const back = new MemoryStore();
  const front = new MapFront();
  const store = new LayeredStore({ back, front });
  front.down = true;
  const first = await store.begin(INPUT);
  assert.equal(first.outcome, "started");
  if (first.outcome !== "started") return;
  assert.equal((await store.begin(INPUT)).outcome, "in_progress", "the back still holds the claim");
  front.down = false;
  front.entries.clear();
  assert.equal((await store.begin(INPUT)).outcome, "in_progress");
  assert.ok(await store.complete({ recordId: first.recordId, leaseToken: first.leaseToken }, RESPONSE));
  front.entries.clear();
  assert.equal(
    (await store.begin(INPUT)).outcome,
    "replay",
    "flushed front: the back replays and refills it",
  );
  assert.equal((await store.begin(INPUT)).outcome, "replay");
  assert.ok(store.frontErrors >= 2);
  assert.equal(store.frontHits, 1);
});

Deno.test("layered: another fingerprint is decided by the back (422), and a failure clears the marker", async () => {
  const store = new LayeredStore({ back: new MemoryStore(), front: new MapFront() });
  const first = await store.begin(INPUT);
  if (first.outcome !== "started") throw new Error("expected started");
  assert.equal((await store.begin({ ...INPUT, fingerprint: "e".repeat(64) })).outcome, "mismatch");
  assert.ok(await store.fail({ recordId: first.recordId, leaseToken: first.leaseToken }, { message: "x" }));
  assert.equal((await store.begin(INPUT)).outcome, "started", "a retry after a failure runs again at once");
});
