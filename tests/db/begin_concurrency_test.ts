/**
 * SQL-level concurrency proof of `public.idempotency_begin`: 50 connections call it on one fresh key at the
 * same instant, and Postgres, not the callers, decides that exactly one of them starts the work.
 *
 * The calls are lined up by a barrier inside the server: a gate connection holds an exclusive advisory lock,
 * every worker's statement first waits for a shared lock on the same key (in a scalar subquery that the
 * function's argument depends on, so it runs before the function), and only when `pg_locks` shows all 50
 * waiting does the gate let go. All 50 statements then proceed together, with no client round trip between
 * the barrier and the claim.
 *
 *   deno test --allow-all tests/db        (SUPABASE_DB_URL, else DB_URL, else the local stack's database)
 */

import assert from "node:assert/strict";
import postgres from "postgres";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? Deno.env.get("DB_URL") ??
  "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const WORKERS = 50;
const ROUNDS = 20;
const FUNCTION_NAME = "concurrency-test";
/** How long the barrier waits for every worker to queue up before the test fails instead of hanging. */
const BARRIER_TIMEOUT_MS = 15_000;

type Sql = postgres.Sql;
type Reserved = postgres.ReservedSql;

interface BeginRow {
  outcome: "started" | "replay" | "in_progress" | "mismatch";
  record_id: string;
  lease_token: string | null;
  retry_after_seconds: number | null;
  attempt_count: number;
  replay_count: number;
}

const runId = crypto.randomUUID().slice(0, 8);

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** A positive 31-bit advisory lock key, so that pg_locks shows it whole in objid (classid 0). */
function randomLockKey(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]! & 0x7fffffff;
}

/**
 * The pool of 50 reserved connections, each opened before any test statement runs, and the gate: one more
 * connection that holds the barrier and does the bookkeeping (the pool has none left to spare).
 */
interface Connections {
  pool: Sql;
  workers: Reserved[];
  gate: Sql;
}

async function connect(): Promise<Connections> {
  const options = { max: WORKERS, idle_timeout: 30, connect_timeout: 10, onnotice: () => {} };
  const pool = postgres(DB_URL, options);
  const gate = postgres(DB_URL, { ...options, max: 1 });
  const workers = await Promise.all(Array.from({ length: WORKERS }, () => pool.reserve()));
  const pids = await Promise.all(workers.map(async (w) => (await w`select pg_backend_pid() as pid`)[0]!.pid));
  assert.equal(new Set(pids).size, WORKERS, "every worker has its own server connection");
  return { pool, workers, gate };
}

async function disconnect({ pool, workers, gate }: Connections): Promise<void> {
  for (const w of workers) w.release();
  await Promise.all([pool.end({ timeout: 5 }), gate.end({ timeout: 5 })]);
}

async function deleteRows(sql: Sql): Promise<void> {
  await sql`delete from public.idempotency_keys where function_name = ${FUNCTION_NAME}`;
}

/**
 * Runs `statements` (one per worker) behind a barrier: each is sent at once, blocks in the server on the
 * gate's lock, and all are released together once all of them are waiting. Returns every settlement.
 */
async function throughBarrier<T>(
  gate: Sql,
  statements: ((lockKey: number) => Promise<T>)[],
): Promise<PromiseSettledResult<T>[]> {
  const lockKey = randomLockKey();
  await gate`select pg_advisory_lock(${lockKey})`;
  let results: Promise<PromiseSettledResult<T>[]> | undefined;
  try {
    results = Promise.allSettled(statements.map((run) => run(lockKey)));
    const deadline = Date.now() + BARRIER_TIMEOUT_MS;
    for (;;) {
      const [{ waiting }] = (await gate`
        select count(*)::int as waiting from pg_locks
        where locktype = 'advisory' and classid = 0 and objid = ${lockKey} and objsubid = 1 and not granted`) as [
        { waiting: number },
      ];
      if (waiting === statements.length) break;
      if (Date.now() > deadline) {
        throw new Error(`only ${waiting} of ${statements.length} statements reached the barrier`);
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    await gate`select pg_advisory_unlock(${lockKey})`;
  }
  return await results;
}

/**
 * idempotency_begin on `key`, run only after the shared lock is granted: the lock sits in a scalar subquery
 * in the key argument, which Postgres must evaluate before it can call the function. The lock is
 * transaction-scoped, so it ends with the statement.
 */
function gatedBegin(conn: Reserved, key: string, fingerprint: string) {
  return async (lockKey: number): Promise<BeginRow> => {
    const rows = await conn<BeginRow[]>`
      select b.outcome, b.record_id, b.lease_token, b.retry_after_seconds, b.attempt_count, b.replay_count
      from public.idempotency_begin(
        ${key} || (select '' from (select pg_advisory_xact_lock_shared(${lockKey})) as barrier),
        null, ${FUNCTION_NAME}, ${fingerprint}, 60, 30
      ) as b`;
    assert.equal(rows.length, 1, "idempotency_begin returns one row");
    return rows[0]!;
  };
}

/** idempotency_begin on `key` at once, without a barrier. */
async function begin(conn: Reserved, key: string, fingerprint: string): Promise<BeginRow> {
  const [row] = await conn<BeginRow[]>`
    select b.outcome, b.record_id, b.lease_token, b.retry_after_seconds, b.attempt_count, b.replay_count
    from public.idempotency_begin(${key}, null, ${FUNCTION_NAME}, ${fingerprint}, 60, 30) as b`;
  return row!;
}

function fulfilled<T>(settled: PromiseSettledResult<T>[]): T[] {
  const errors = settled.flatMap((s) => s.status === "rejected" ? [String(s.reason)] : []);
  assert.deepEqual(errors, [], "no call raised");
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

function countOutcomes(rows: BeginRow[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const row of rows) counts[row.outcome] = (counts[row.outcome] ?? 0) + 1;
  return counts;
}

Deno.test("50 concurrent idempotency_begin calls on a fresh key: exactly one started, 20 rounds", async () => {
  const conns = await connect();
  try {
    await deleteRows(conns.gate);
    for (let round = 1; round <= ROUNDS; round++) {
      const key = `conc-${runId}-r${round}`;
      const fingerprint = randomHex(32);
      const rows = fulfilled(
        await throughBarrier(conns.gate, conns.workers.map((w) => gatedBegin(w, key, fingerprint))),
      );

      assert.deepEqual(
        countOutcomes(rows),
        { started: 1, in_progress: WORKERS - 1 },
        `round ${round}: one started, the rest in_progress`,
      );
      const started = rows.find((r) => r.outcome === "started")!;
      assert.ok(started.lease_token, `round ${round}: the starter holds a lease token`);
      assert.equal(new Set(rows.map((r) => r.record_id)).size, 1, `round ${round}: all name the same record`);
      for (const r of rows.filter((r) => r.outcome === "in_progress")) {
        assert.equal(r.lease_token, null, `round ${round}: in_progress hands out no lease`);
        assert.ok(
          r.retry_after_seconds !== null && r.retry_after_seconds >= 1 && r.retry_after_seconds <= 30,
          `round ${round}: in_progress says when to retry (got ${r.retry_after_seconds})`,
        );
      }

      const stored = await conns.gate`
        select status, lease_token, attempt_count, replay_count from public.idempotency_keys
        where idempotency_key = ${key} and user_id is null`;
      assert.deepEqual(
        stored.map((r) => ({ ...r })),
        [{ status: "processing", lease_token: started.lease_token, attempt_count: 1, replay_count: 0 }],
        `round ${round}: one row, held by the starter, after one attempt`,
      );
    }
  } finally {
    await deleteRows(conns.gate).finally(() => disconnect(conns));
  }
});

Deno.test("the holder completes in the middle of a burst: the rest see in_progress or replay, never started", async () => {
  const conns = await connect();
  try {
    await deleteRows(conns.gate);
    const key = `conc-${runId}-mid`;
    const fingerprint = randomHex(32);
    const [holder, ...others] = conns.workers;
    const claim = await begin(holder!, key, fingerprint);
    assert.equal(claim.outcome, "started");

    // Wave 1, before the holder finishes: the other 49 all see in_progress.
    const before = fulfilled(
      await throughBarrier(conns.gate, others.map((w) => gatedBegin(w, key, fingerprint))),
    );
    assert.deepEqual(
      countOutcomes(before),
      { in_progress: others.length },
      "before completion all in_progress",
    );

    // Wave 2: the holder's complete is released by the same barrier as the others' begins, and each of the
    // others claims three times in a row, so that claims land before, while and after the completion commits.
    const CLAIMS_EACH = 3;
    const complete = async (lockKey: number) => {
      const [{ done }] = (await holder!`
        select public.idempotency_complete(
          ${claim.record_id}::uuid,
          ${claim.lease_token}::uuid,
          200 + (select 0 from (select pg_advisory_xact_lock_shared(${lockKey})) as barrier),
          convert_to('{"ok":true}', 'UTF8'),
          'identity',
          '{"content-type": "application/json"}'::jsonb
        ) as done`) as [{ done: boolean }];
      return done;
    };
    const bursts = others.map((w) => async (lockKey: number) => {
      const rows = [await gatedBegin(w, key, fingerprint)(lockKey)];
      for (let i = 1; i < CLAIMS_EACH; i++) rows.push(await begin(w, key, fingerprint));
      return rows;
    });

    const settled = await throughBarrier<boolean | BeginRow[]>(conns.gate, [complete, ...bursts]);
    const [completed, ...claims] = fulfilled(settled);
    assert.equal(completed, true, "the holder's complete succeeded");
    const rows = (claims as BeginRow[][]).flat();
    assert.equal(rows.length, others.length * CLAIMS_EACH);

    const counts = countOutcomes(rows);
    assert.equal(counts.started, undefined, "no second started");
    assert.deepEqual(
      Object.keys(counts).filter((o) => o !== "in_progress" && o !== "replay"),
      [],
      `only in_progress and replay (got ${JSON.stringify(counts)})`,
    );
    assert.ok(rows.every((r) => r.record_id === claim.record_id), "all name the holder's record");
    for (const r of rows.filter((r) => r.outcome === "replay")) {
      assert.equal(r.lease_token, null, "a replay hands out no lease");
      assert.equal(r.attempt_count, 1, "a replay reports the holder's single attempt");
    }

    // Every replay was counted exactly once, and the row is the holder's completed one.
    const [stored] = await conns.gate`
      select status, status_code, replay_count, attempt_count, convert_from(response, 'UTF8') as body
      from public.idempotency_keys where idempotency_key = ${key} and user_id is null`;
    assert.deepEqual(
      { ...stored },
      {
        status: "completed",
        status_code: 200,
        replay_count: counts.replay ?? 0,
        attempt_count: 1,
        body: '{"ok":true}',
      },
    );

    // Wave 3, after the burst: everyone gets the stored response.
    const after = fulfilled(
      await throughBarrier(conns.gate, others.map((w) => gatedBegin(w, key, fingerprint))),
    );
    assert.deepEqual(countOutcomes(after), { replay: others.length }, "after completion all replay");
  } finally {
    await deleteRows(conns.gate).finally(() => disconnect(conns));
  }
});
