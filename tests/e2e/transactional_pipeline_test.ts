/**
 * The transactional mode runs behind the same request pipeline as `withIdempotency`: the rollout switch (and
 * its environment override) bypasses and counts, keyless calls are merged, every counter reaches
 * `handler.metrics` and the recorder (the database one the Prometheus endpoint reads), a duplicate's 409 carries
 * the hint from recent run durations, `onInFlight: "wait"` replays, and an outage of the claim is answered by
 * `onStoreError` (503, or fail-open running the work). Against the real database, in process; options that
 * do not apply to a claim design are refused at wrap time.
 */

import assert from "node:assert/strict";
import {
  type IdempotencyMetrics,
  type TransactionalHandler,
  type TransactionalOptions,
  withIdempotentTransaction,
} from "../../supabase/functions/_shared/idempotency.ts";
import type { PostgresClient } from "../../supabase/functions/_shared/idempotency/pool.ts";
import type {
  LatencyHistogram,
  MetricsRecorder,
} from "../../supabase/functions/_shared/idempotency/metrics.ts";
import { PostgresMetricsRecorder } from "../../supabase/functions/_shared/idempotency/metrics_postgres.ts";
import { countRows, documentHandler, transactionalTest, userRequest, wrapTransactional } from "./support.ts";

/** A function name of its own per test: counters and environment overrides are per function. */
const uniqueName = () => `txp-${crypto.randomUUID().slice(0, 8)}`;

/** `handler` wrapped under a function name of its own; `options` override. */
const wrap = (
  sql: PostgresClient,
  handler: TransactionalHandler,
  options: Partial<TransactionalOptions> = {},
) => wrapTransactional(sql, handler, { functionName: uniqueName(), ...options });

async function drain(responses: Response[]): Promise<void> {
  await Promise.all(responses.map((r) => r.body?.cancel()));
}

transactionalTest(
  "transactional + rollout: disabled, or switched off by the environment, runs unprotected and counts",
  async (t, sql) => {
    const user = await t.newUser();
    const key = t.newKey();
    const off = wrap(sql, documentHandler(), { enabled: false });
    const responses = [await off(userRequest(user, key)), await off(userRequest(user, key))];
    assert.deepEqual(responses.map((r) => r.status), [201, 201]);
    assert.equal(responses[1]!.headers.get("x-idempotency-replay"), "false", "a bypassed retry runs again");
    await drain(responses);
    assert.equal(await countRows(t.sql, "documents", user.id), 2);
    assert.equal(off.metrics.bypassed, 2);
    assert.equal(off.metrics.started, 0);
    const [{ n } = { n: -1 }] = await t.sql<{ n: number }[]>`
    select count(*)::int as n from public.idempotency_keys where idempotency_key = ${key}`;
    assert.equal(n, 0, "no key record");

    // the environment overrides the option per request
    const name = uniqueName();
    const env = `IDEMPOTENCY_ENABLED_${name.toUpperCase().replaceAll("-", "_")}`;
    const handler = wrap(sql, documentHandler(), { functionName: name });
    Deno.env.set(env, "false");
    try {
      const bypassed = await handler(userRequest(user, t.newKey()));
      assert.equal(bypassed.status, 201);
      await bypassed.body?.cancel();
      assert.equal(handler.metrics.bypassed, 1);
    } finally {
      Deno.env.delete(env);
    }
    const protectedKey = t.newKey();
    await drain([
      await handler(userRequest(user, protectedKey)),
      await handler(userRequest(user, protectedKey)),
    ]);
    assert.deepEqual({ ...handler.metrics }, { ...handler.metrics, bypassed: 1, started: 1, replayed: 1 });
    assert.equal(await countRows(t.sql, "documents", user.id), 4);
  },
);

transactionalTest(
  "transactional + keyless: a double submit without a key runs once; both bucket records commit",
  async (t, sql) => {
    const user = await t.newUser();
    const handler = wrap(sql, documentHandler(() => new Promise((r) => setTimeout(r, 50))), {
      keyless: true,
      keylessWindowMs: 2000,
      onInFlight: "wait",
    });
    const body = { title: `keyless-${crypto.randomUUID()}` };
    const [a, b] = await Promise.all([
      handler(userRequest(user, null, body)),
      handler(userRequest(user, null, body)),
    ]);
    assert.deepEqual([a!.status, b!.status], [201, 201]);
    const replays = [a!, b!].map((r) => r.headers.get("x-idempotency-replay")).sort();
    assert.deepEqual(replays, ["false", "true"]);
    assert.deepEqual(await a!.json(), await b!.json(), "the duplicate got the first answer");
    assert.equal(await countRows(t.sql, "documents", user.id), 1);
    const records = await t.sql<{ idempotency_key: string; status: string }[]>`
    select idempotency_key, status from public.idempotency_keys where user_id = ${user.id}`;
    assert.equal(records.length, 2, "the pair of bucket records");
    assert.ok(records.every((r) => r.idempotency_key.startsWith("kl_") && r.status === "completed"));
    // another request is not merged
    const other = await handler(userRequest(user, null, { title: "another" }));
    assert.equal(other.headers.get("x-idempotency-replay"), "false");
    await other.body?.cancel();
    assert.equal(await countRows(t.sql, "documents", user.id), 2);
    assert.equal(handler.metrics.started, 2);
    assert.equal(handler.metrics.replayed, 1);
  },
);

transactionalTest(
  "transactional + metrics: handler.metrics and the database recorder count every outcome",
  async (t, sql) => {
    const name = uniqueName();
    const recorder = new PostgresMetricsRecorder({ sql, flushMs: 60_000 });
    const observed: LatencyHistogram[] = [];
    const tee: MetricsRecorder = {
      count: (fn, outcome, by) => recorder.count(fn, outcome, by),
      observe: (
        fn,
        histogram,
        seconds,
      ) => (observed.push(histogram), recorder.observe(fn, histogram, seconds)),
    };
    try {
      const user = await t.newUser();
      let release!: () => void;
      const gate = new Promise<void>((resolve) => release = resolve);
      let calls = 0;
      const inner = documentHandler();
      const handler = wrap(sql, async (req, ctx) => {
        const response = await inner(req, ctx);
        if (++calls === 1) return Response.json({ error: "down" }, { status: 503 });
        if (calls === 3) await gate;
        return response;
      }, { functionName: name, metrics: tee });
      const key = t.newKey();
      const failed = await handler(userRequest(user, key)); // 503: released
      const first = await handler(userRequest(user, key)); // runs
      const replay = await handler(userRequest(user, key));
      const mismatch = await handler(userRequest(user, key, { title: "other" }));
      const heldKey = t.newKey();
      const held = handler(userRequest(user, heldKey));
      while (calls < 3) await new Promise((r) => setTimeout(r, 10));
      const inFlight = await handler(userRequest(user, heldKey));
      release();
      const statuses = [failed, first, replay, mismatch, inFlight, await held].map((r) => r.status);
      assert.deepEqual(statuses, [503, 201, 201, 422, 409, 201]);
      await drain([failed, first, replay, mismatch, inFlight]);
      const expected: Partial<IdempotencyMetrics> = {
        started: 3,
        failed: 1,
        replayed: 1,
        mismatched: 1,
        inFlight: 1,
      };
      assert.deepEqual({ ...handler.metrics }, { ...handler.metrics, ...expected });
      assert.equal(handler.metrics.storeErrors + handler.metrics.failOpen + handler.metrics.leaseLost, 0);
      assert.ok(observed.includes("claim") && observed.includes("handler"), `observed ${observed}`);
      await recorder.flush();
      const rows = await t.sql<{ label: string; value: number }[]>`
      select label, value from public.idempotency_metric_counters
      where function_name = ${name} and metric = 'outcomes_total'`;
      const counted = Object.fromEntries(rows.map((r) => [r.label, Number(r.value)]));
      assert.deepEqual(counted, { started: 3, failed: 1, replayed: 1, mismatched: 1, in_flight: 1 });
      const [claims] = await t.sql<{ value: number }[]>`select value from public.idempotency_metric_counters
      where function_name = ${name} and metric = 'claim_seconds_count'`;
      assert.equal(Number(claims?.value), 6, "one claim latency per keyed request");
    } finally {
      await recorder.close();
      await t.sql`delete from public.idempotency_metric_counters where function_name = ${name}`;
    }
  },
);

transactionalTest(
  "transactional: a duplicate's 409 hints at the first's expected finish; with wait it replays",
  async (t, sql) => {
    const user = await t.newUser();
    let gate: () => Promise<void> = () => new Promise((r) => setTimeout(r, 1300));
    const handler = wrap(sql, documentHandler(() => gate()));
    const warm = await handler(userRequest(user, t.newKey())); // one sample of about 1.3 s
    await warm.body?.cancel();
    let release!: () => void;
    gate = () => new Promise<void>((resolve) => release = resolve);
    const key = t.newKey();
    const held = handler(userRequest(user, key));
    while (release === undefined) await new Promise((r) => setTimeout(r, 10));
    const duplicate = await handler(userRequest(user, key));
    assert.equal(duplicate.status, 409);
    assert.equal((await duplicate.json()).error.code, "REQUEST_IN_PROGRESS");
    const hintMs = Number(duplicate.headers.get("x-idempotency-retry-after-ms"));
    assert.ok(hintMs >= 1300 && hintMs < 5000, `hint ${hintMs} ms`);
    assert.equal(duplicate.headers.get("retry-after"), "2", "whole seconds, rounded up from the hint");
    release();
    await (await held).body?.cancel();

    const waiting = wrap(sql, documentHandler(() => new Promise((r) => setTimeout(r, 100))), {
      onInFlight: "wait",
    });
    const waitKey = t.newKey();
    const all = await Promise.all(Array.from({ length: 10 }, () => waiting(userRequest(user, waitKey))));
    assert.deepEqual(all.map((r) => r.status), Array(10).fill(201), "no 409: the duplicates waited");
    assert.equal(all.filter((r) => r.headers.get("x-idempotency-replay") === "false").length, 1);
    assert.equal(new Set(await Promise.all(all.map((r) => r.text()))).size, 1);
    assert.equal(waiting.metrics.started, 1);
    assert.equal(await countRows(t.sql, "documents", user.id), 3);
  },
);

transactionalTest(
  "transactional + store outage: fail-closed answers 503 and runs nothing; fail-open runs once",
  async (t, sql) => {
    let unlock!: () => void;
    const unlocked = new Promise<void>((resolve) => unlock = resolve);
    let holder: Promise<unknown> = Promise.resolve();
    Deno.env.set("IDEMPOTENCY_STORE_TIMEOUT_MS", "300"); // read when the wrapper's claim store is made
    try {
      const user = await t.newUser();
      const closed = wrap(sql, documentHandler());
      const open = wrap(sql, documentHandler(), { onStoreError: "fail-open" });
      // the claim cannot get past a held table lock: its deadline passes (an outage, not a refusal)
      await new Promise<void>((locked) => {
        holder = t.sql.begin(async (tx) => {
          await tx`lock table public.idempotency_keys in access exclusive mode`;
          locked();
          await unlocked;
        });
      });
      const refused = await closed(userRequest(user, t.newKey()));
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.equal((await refused.json()).error.code, "STORE_UNAVAILABLE");
      assert.equal(await countRows(t.sql, "documents", user.id), 0, "fail-closed ran nothing");
      const key = t.newKey();
      const ran = await open(userRequest(user, key));
      assert.equal(ran.status, 201);
      assert.equal(ran.headers.get("x-idempotency-replay"), "false");
      await ran.body?.cancel();
      unlock();
      await holder;
      assert.equal(
        await countRows(t.sql, "documents", user.id),
        1,
        "fail-open ran the work, in its transaction",
      );
      assert.deepEqual([closed.metrics.storeErrors, closed.metrics.failOpen], [1, 0]);
      assert.deepEqual([open.metrics.storeErrors, open.metrics.failOpen, open.metrics.started], [1, 1, 0]);
      const [{ n } = { n: -1 }] = await t.sql<
        { n: number }[]
      >`select count(*)::int as n from public.idempotency_keys
      where idempotency_key = ${key} and status = 'completed'`;
      assert.equal(n, 0, "fail-open stores nothing");
    } finally {
      Deno.env.delete("IDEMPOTENCY_STORE_TIMEOUT_MS");
      unlock();
      await holder;
    }
  },
);

Deno.test("transactional: options that do not apply to the claim design are refused at wrap time", () => {
  const handler: TransactionalHandler = () => new Response(null, { status: 204 });
  const refused: Partial<TransactionalOptions>[] = [
    { lockWaitMs: 100 }, // the separate claim never waits on a row
    { claim: "in-transaction", keyless: true },
    { claim: "in-transaction", onInFlight: "reject" }, // duplicates always wait on the row
    { claim: "in-transaction", waitTimeoutMs: 100 }, // lockWaitMs bounds that wait
    { claim: "in-transaction", renewLease: true }, // nothing to renew before the commit
    { claim: "in-transaction", maxRunSeconds: 10 },
    // deno-lint-ignore no-explicit-any
    { store: {} as any } as Partial<TransactionalOptions>,
  ];
  for (const options of refused) {
    assert.throws(() => withIdempotentTransaction(handler, { functionName: "f", ...options }), TypeError);
  }
  // what does apply is accepted
  withIdempotentTransaction(handler, {
    functionName: "f",
    claim: "in-transaction",
    onInFlight: "wait",
    lockWaitMs: 50,
  });
  withIdempotentTransaction(handler, {
    functionName: "f",
    keyless: true,
    onInFlight: "wait",
    maxRunSeconds: 5,
  });
});
