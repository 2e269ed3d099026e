/**
 * Benchmark of the action API, figures printed, from one run:
 *   1. in-memory store: the repeat check per call (`checkExecuted` of a completed key, and a whole repeated
 *      `executeWithIdempotency` with its key derived from the action) — goal under 2 µs;
 *   2. in-memory store: heap bytes per stored entry over 100,000 completed entries — goal under 200 bytes;
 *   3. Redis and Postgres: the overhead of one action (first run: claim + complete; repeat: claim) next to
 *      one raw round trip to the same server (`PING`, `select 1`), medians.
 *
 *   scripts/stack.sh start && deno task bench:actions [--calls 200000] [--entries 100000] [--samples 500]
 *
 * Postgres runs with production durability for the measurement (`fsync`, `synchronous_commit`,
 * `full_page_writes` on, set with ALTER SYSTEM and reset afterwards). This machine has 2 cores shared with
 * other developers: figures are noisy; quote the medians and ratios of one run.
 */

import { parseArgs } from "node:util";
// deno-lint-ignore no-import-prefix -- as the stores import it
import postgres from "npm:postgres@3.4.9";
// deno-lint-ignore no-import-prefix -- as the stores import it
import { createClient } from "npm:redis@5.10.0";
import {
  ActionIdempotency,
  type ActionIdentity,
  type ActionStore,
  generateActionKey,
  MemoryActionStore,
  metaFromKey,
} from "../../supabase/functions/_shared/actions.ts";
import { PostgresActionStore } from "../../supabase/functions/_shared/actions_postgres.ts";
import { RedisActionStore } from "../../supabase/functions/_shared/actions_redis.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    calls: { type: "string", default: "200000" },
    entries: { type: "string", default: "100000" },
    samples: { type: "string", default: "500" },
  },
});
const CALLS = Number(args.calls);
const ENTRIES = Number(args.entries);
const SAMPLES = Number(args.samples);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};
const fmt = (n: number, digits = 3) => n.toFixed(digits);
const identity = (i: number, run: string): ActionIdentity => ({
  signalId: `signal-${run}-${i}`,
  actionType: "create_task",
  target: "trello",
  params: { name: `Review invoice ${i}`, boardId: "board-456" },
});

/** µs per call of `fn`, as the median of `batches` batches of `perBatch` calls. */
async function perCall(batches: number, perBatch: number, fn: (i: number) => unknown): Promise<number> {
  const results: number[] = [];
  let i = 0;
  for (let b = 0; b < batches; b++) {
    const start = performance.now();
    for (let n = 0; n < perBatch; n++) await fn(i++);
    results.push(((performance.now() - start) * 1000) / perBatch);
  }
  return median(results);
}

async function memoryRepeatCheck(): Promise<void> {
  const actions = new ActionIdempotency({ store: new MemoryActionStore() });
  const action = identity(0, "mem");
  await actions.executeWithIdempotency(action, () => ({ cardId: "card-0" }));
  const key = actions.keyOf(action);
  const batches = 20;
  const perBatch = Math.max(1, Math.floor(CALLS / batches));
  await perCall(2, perBatch, () => actions.checkExecuted(key)); // warm up
  const check = await perCall(batches, perBatch, () => actions.checkExecuted(key));
  const store = actions.store;
  const raw = await perCall(batches, perBatch, () => store.check(key));
  const record = await perCall(batches, perBatch, () => store.get(key));
  const keyOnly = await perCall(batches, perBatch, () => generateActionKey(action));
  const repeat = await perCall(batches, perBatch, () => actions.executeWithIdempotency(action, () => null));
  console.log("\n1. in-memory repeat check (µs per call, median of 20 batches of %d calls)", perBatch);
  console.log(`   checkExecuted(key) of a completed action       ${fmt(check)} µs   (goal < 2 µs)`);
  console.log(`   store.check(key) alone                         ${fmt(raw)} µs`);
  console.log(`   getIdempotencyRecord: store.get(key), a whole record ${fmt(record)} µs`);
  console.log(
    `   executeWithIdempotency repeat, key derived     ${fmt(repeat)} µs   (of which key derivation ${
      fmt(keyOnly)
    } µs)`,
  );
  await actions.close();
}

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error("run with --v8-flags=--expose-gc (deno task bench:actions does)");
  for (let i = 0; i < 3; i++) collect();
}

async function memoryBytesPerEntry(): Promise<void> {
  // what executeWithIdempotency stores: the key's own metadata, the result as JSON.stringify makes it
  const fill = async (store: MemoryActionStore, keyOf: (i: number) => string) => {
    for (let i = 0; i < ENTRIES; i++) {
      const key = keyOf(i);
      const meta = metaFromKey(key);
      const claim = await store.claim({ key, meta, ttlMs: 86_400_000, leaseMs: 30_000, retryFailed: true });
      if (claim.outcome === "started") {
        await store.complete(claim.lease, JSON.stringify({ cardId: `card-${i}` }));
      }
    }
  };
  // a. the store's own cost: keys made beforehand (they are the caller's strings, alive anyway)
  const keys = Array.from({ length: ENTRIES }, (_, i) => generateActionKey(identity(i, "heap")));
  const own = new MemoryActionStore({ maxEntries: ENTRIES });
  gc();
  let before = Deno.memoryUsage().heapUsed;
  await fill(own, (i) => keys[i]!);
  gc();
  const ownBytes = (Deno.memoryUsage().heapUsed - before) / ENTRIES;
  const keyLength = keys.reduce((sum, key) => sum + key.length, 0) / ENTRIES;
  await own.close();
  keys.length = 0;
  // b. everything: keys made inside the loop, so the heap delta includes them
  const all = new MemoryActionStore({ maxEntries: ENTRIES });
  gc();
  before = Deno.memoryUsage().heapUsed;
  await fill(all, (i) => generateActionKey(identity(i, "heap2")));
  gc();
  const allBytes = (Deno.memoryUsage().heapUsed - before) / ENTRIES;
  await all.close();
  console.log("\n2. in-memory bytes per stored entry (V8 heap after GC, %d completed entries)", ENTRIES);
  console.log(
    `   entry, map slot and result JSON (key not counted)  ${fmt(ownBytes, 1)} bytes   (goal < 200)`,
  );
  console.log(
    `   the same with its ${fmt(keyLength, 0)}-character key string           ${fmt(allBytes, 1)} bytes`,
  );
}

/** Medians of: one raw round trip, an action's first run, a repeat, measured interleaved. */
async function storeOverhead(
  name: string,
  store: ActionStore,
  roundTrip: () => Promise<unknown>,
  extras: { label: string; run: (i: number) => Promise<unknown> }[],
  run: string,
): Promise<void> {
  const actions = new ActionIdempotency({ store });
  const repeatAction = identity(0, `${run}-${name}-repeat`);
  await actions.executeWithIdempotency(repeatAction, () => ({ ok: true }));
  const series: Record<string, number[]> = { raw: [], first: [], repeat: [] };
  for (const extra of extras) series[extra.label] = [];
  for (let i = 0; i < SAMPLES + 20; i++) {
    const time = async (label: string, fn: () => Promise<unknown>) => {
      const start = performance.now();
      await fn();
      if (i >= 20) series[label]!.push(performance.now() - start);
    };
    await time("raw", roundTrip);
    await time(
      "first",
      () => actions.executeWithIdempotency(identity(i, `${run}-${name}`), () => ({ ok: true })),
    );
    await time("repeat", () => actions.executeWithIdempotency(repeatAction, () => ({ ok: true })));
    for (const extra of extras) await time(extra.label, () => extra.run(i));
  }
  const raw = median(series.raw!);
  const first = median(series.first!);
  const repeat = median(series.repeat!);
  console.log(
    `   ${name.padEnd(9)} raw round trip ${fmt(raw)} ms | action first run ${fmt(first)} ms (x${
      fmt(first / raw, 2)
    }, +${fmt(first - raw)} over one round trip) | repeat ${fmt(repeat)} ms (x${fmt(repeat / raw, 2)})`,
  );
  for (const extra of extras) {
    const e = median(series[extra.label]!);
    console.log(`   ${"".padEnd(9)} ${extra.label.padEnd(66)} ${fmt(e)} ms (x${fmt(e / raw, 2)})`);
  }
}

async function withDurability<T>(sql: postgres.Sql, fn: () => Promise<T>): Promise<T> {
  const settings = ["fsync", "synchronous_commit", "full_page_writes"];
  for (const s of settings) await sql.unsafe(`alter system set ${s} = on`);
  await sql`select pg_reload_conf()`;
  await new Promise((resolve) => setTimeout(resolve, 300));
  try {
    const shown = [];
    for (const s of settings) shown.push(`${s}=${(await sql.unsafe(`show ${s}`))[0]?.[s]}`);
    console.log(`   (Postgres for this run: ${shown.join(", ")})`);
    return await fn();
  } finally {
    for (const s of settings) await sql.unsafe(`alter system reset ${s}`);
    await sql`select pg_reload_conf()`;
  }
}

async function serverOverheads(): Promise<void> {
  const run = crypto.randomUUID().slice(0, 8);
  console.log("\n3. overhead per action next to one raw round trip (medians of %d, interleaved)", SAMPLES);

  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const redisStore = new RedisActionStore({ url: REDIS_URL, prefix: `bench-${run}` });
  try {
    await storeOverhead("redis", redisStore, () => redis.ping(), [], run);
  } finally {
    await redisStore.clear().catch(() => {});
    for await (const keys of redis.scanIterator({ MATCH: `{bench-${run}}*`, COUNT: 500 })) {
      if (keys.length > 0) await redis.del(keys);
    }
    await redisStore.close();
    await redis.close();
  }

  const admin = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const pgStore = new PostgresActionStore({ sql });
  const txActions = new ActionIdempotency({ store: pgStore });
  try {
    await withDurability(admin, () =>
      storeOverhead("postgres", pgStore, () => sql`select 1`, [
        {
          label: "for scale: one durable commit (a plain one-row insert)",
          run: () =>
            sql`insert into public.notifications (kind, message, action_key) values ('bench', 'x', ${`bench-${run}`})`,
        },
        {
          label: "executeInTransaction first run, inserting one notification row",
          run: (i) =>
            txActions.executeInTransaction<unknown, postgres.TransactionSql>(
              identity(i, `${run}-tx`),
              (tx) =>
                tx`insert into public.notifications (kind, message, action_key) values ('bench', 'x', ${`bench-${run}`})`,
            ),
        },
      ], run));
  } finally {
    await sql`delete from public.action_records where signal_id like ${`signal-${run}%`}`;
    await sql`delete from public.notifications where action_key = ${`bench-${run}`}`;
    await sql.end();
    await admin.end();
  }
}

console.log("Action API benchmark — one run on a shared, noisy 2-core machine: quote medians and ratios.");
await memoryRepeatCheck();
await memoryBytesPerEntry();
await serverOverheads();
