/**
 * The behaviour every {@link ActionStore} must share, through the {@link ActionIdempotency} manager, as
 * `Deno.test` cases: each store's test file calls {@link runActionContract} once. Cases use action types,
 * targets and signals of their own, so stores shared with other runs (Redis, Postgres) do not disturb them;
 * figures are compared as before/after deltas for the same reason.
 *
 * @module
 */

import assert from "node:assert/strict";
import { IdempotencyError } from "../errors.ts";
import { type ActionIdentity, parseIdempotencyKey } from "./keys.ts";
import { ActionIdempotency } from "./manager.ts";
import type { ActionStore } from "./store.ts";

/** Makes a fresh store for one case; the suite closes it. */
export type MakeActionStore = () => Promise<ActionStore> | ActionStore;

/** Just over the shortest lease and TTL the stores accept (1 s). */
const PAST_ONE_SECOND = 1100;
/** How many calls race in the concurrency cases. */
export const CONCURRENT_EXECUTIONS = 100;

interface Ctx {
  actions: ActionIdempotency;
  store: ActionStore;
  /** A fresh action of this case: unique signal, type and target. */
  action(params?: unknown): ActionIdentity & { actionType: string };
  tag: string;
}

/**
 * Registers the contract cases for the store `name`.
 *
 * @param name Used in test names.
 * @param makeStore A fresh store per case.
 */
export function runActionContract(name: string, makeStore: MakeActionStore): void {
  const test = (title: string, body: (ctx: Ctx) => Promise<void>) =>
    Deno.test(`${name} action contract: ${title}`, async () => {
      const store = await makeStore();
      const tag = crypto.randomUUID().slice(0, 8);
      const actions = new ActionIdempotency({ store, waitTimeoutMs: 20_000 });
      let n = 0;
      try {
        await body({
          actions,
          store,
          tag,
          action: (params = { n }) => ({
            signalId: `sig-${tag}-${n++}`,
            actionType: `type-${tag}`,
            target: `target-${tag}`,
            params,
          }),
        });
      } finally {
        await actions.close();
      }
    });

  test("runs once, then replays the recorded result with its record", async ({ actions, action }) => {
    const a = action({ name: "Review", id: 1 });
    let runs = 0;
    const first = await actions.executeWithIdempotency(a, () => ({ card: ++runs }));
    const again = await actions.executeWithIdempotency({ ...a, params: { id: 1, name: "Review" } }, () => ({
      card: ++runs,
    }));
    assert.equal(runs, 1);
    assert.deepEqual(first, { key: first.key, result: { card: 1 }, replayed: false, attempt: 1 });
    assert.deepEqual(again, { key: first.key, result: { card: 1 }, replayed: true, attempt: 1 });
    const record = await actions.getIdempotencyRecord(first.key);
    assert.ok(record);
    const parts = parseIdempotencyKey(first.key);
    assert.equal(record.signalId, a.signalId);
    assert.equal(record.actionType, a.actionType);
    assert.equal(record.target, a.target);
    assert.equal(record.paramsHash, parts.paramsHash);
    assert.equal(record.status, "completed");
    assert.deepEqual(record.result, { card: 1 });
    assert.equal(record.error, null);
    assert.equal(record.attemptCount, 1);
    assert.ok(
      record.executedAt && record.executedAt >= record.createdAt && record.expiresAt > record.executedAt,
    );
    assert.equal(record.leaseExpiresAt, null);
  });

  test(`${CONCURRENT_EXECUTIONS} concurrent executions run the executor once; all get its result`, async (ctx) => {
    const a = ctx.action();
    let runs = 0;
    const outcomes = await Promise.all(
      Array.from({ length: CONCURRENT_EXECUTIONS }, () =>
        ctx.actions.executeWithIdempotency(a, async () => {
          runs += 1;
          await sleep(100);
          return { job: "j-1" };
        })),
    );
    assert.equal(runs, 1, "the executor ran once");
    assert.equal(outcomes.filter((o) => !o.replayed).length, 1);
    for (const o of outcomes) assert.deepEqual(o.result, { job: "j-1" });
  });

  test("a concurrent duplicate can choose ACTION_IN_PROGRESS (409) instead of waiting", async (ctx) => {
    const a = ctx.action();
    let release = () => {};
    const gate = new Promise<void>((resolve) => release = resolve);
    const first = ctx.actions.executeWithIdempotency(a, async () => {
      await gate;
      return 1;
    });
    await sleep(50);
    await assert.rejects(
      ctx.actions.executeWithIdempotency(a, () => 2, { onInProgress: "error" }),
      (error: unknown) =>
        error instanceof IdempotencyError && error.code === "ACTION_IN_PROGRESS" && error.status === 409 &&
        (error.retryAfterSeconds ?? 0) >= 1,
    );
    release();
    assert.equal((await first).result, 1);
  });

  test("a failure is recorded with its error and attempt count, then retried", async ({ actions, action }) => {
    const a = action();
    await assert.rejects(
      actions.executeWithIdempotency(a, () => {
        throw new Error("trello is down");
      }),
      /trello is down/,
    );
    const failed = await actions.getIdempotencyRecord(actions.keyOf(a));
    assert.equal(failed?.status, "failed");
    assert.match(failed?.error ?? "", /trello is down/);
    assert.equal(failed?.attemptCount, 1);
    await assert.rejects(
      actions.executeWithIdempotency(a, () => "never", { retryFailed: false }),
      (error: unknown) => error instanceof IdempotencyError && error.code === "ACTION_FAILED",
    );
    const retried = await actions.executeWithIdempotency(a, () => "ok");
    assert.deepEqual([retried.result, retried.replayed, retried.attempt], ["ok", false, 2]);
    const record = await actions.getIdempotencyRecord(retried.key);
    assert.deepEqual([record?.status, record?.attemptCount, record?.error], ["completed", 2, null]);
  });

  test("lease: a holder that vanished is taken over; its stale token can no longer finish", async (ctx) => {
    const a = ctx.action();
    const key = ctx.actions.keyOf(a);
    const meta = { actionType: a.actionType, target: a.target, signalId: a.signalId, paramsHash: null };
    const first = await ctx.store.claim({ key, meta, ttlMs: 60_000, leaseMs: 1000, retryFailed: true });
    assert.equal(first.outcome, "started");
    const busy = await ctx.store.claim({ key, meta, ttlMs: 60_000, leaseMs: 1000, retryFailed: true });
    assert.equal(busy.outcome, "in_progress");
    await sleep(PAST_ONE_SECOND);
    const second = await ctx.store.claim({ key, meta, ttlMs: 60_000, leaseMs: 30_000, retryFailed: true });
    assert.ok(first.outcome === "started" && second.outcome === "started");
    assert.equal(second.attempt, 2);
    assert.equal(await ctx.store.complete(first.lease, '"stale"'), false, "the stale token is refused");
    assert.equal(await ctx.store.fail(first.lease, "stale"), false);
    assert.equal(await ctx.store.extend(first.lease, 5000), false);
    assert.equal(await ctx.store.extend(second.lease, 5000), true);
    assert.equal(await ctx.store.complete(second.lease, '"fresh"'), true);
    assert.equal((await ctx.store.get(key))?.result, "fresh");
  });

  test("a running executor renews its lease: a long action is never taken over", async (ctx) => {
    const a = ctx.action();
    let runs = 0;
    const slow = ctx.actions.executeWithIdempotency(a, async () => {
      runs += 1;
      await sleep(2500);
      return "slow";
    }, { leaseMs: 1000 });
    await sleep(1500);
    const dup = await ctx.actions.executeWithIdempotency(a, () => ++runs, { leaseMs: 1000 });
    assert.equal((await slow).result, "slow");
    assert.deepEqual([dup.result, dup.replayed, runs], ["slow", true, 1]);
  });

  test("TTL: per call, per action type, and the record runs again after it", async ({ store, action, tag }) => {
    const actions = new ActionIdempotency({ store, actionTTLs: { [`type-${tag}`]: 1000 } });
    const a = action();
    let runs = 0;
    const first = await actions.executeWithIdempotency(a, () => ++runs);
    const record = await actions.getIdempotencyRecord(first.key);
    assert.ok(record && record.expiresAt.getTime() - record.createdAt.getTime() < 5000, "per-action TTL");
    const long = await actions.executeWithIdempotency(action(), () => 0, { ttl: 3_600_000 });
    const longRecord = await actions.getIdempotencyRecord(long.key);
    assert.ok(longRecord && longRecord.expiresAt.getTime() - longRecord.createdAt.getTime() > 3_000_000);
    await sleep(PAST_ONE_SECOND + 200);
    assert.equal(await actions.getIdempotencyRecord(first.key), null);
    const again = await actions.executeWithIdempotency(a, () => ++runs);
    assert.deepEqual([again.result, again.replayed, again.attempt], [2, false, 1]);
  });

  test("a completed record is kept a full TTL from its completion", async ({ actions, action }) => {
    const done = await actions.executeWithIdempotency(action(), async () => {
      await sleep(1500);
      return "slow";
    }, { ttl: 2000 });
    const record = await actions.getIdempotencyRecord(done.key);
    assert.ok(record?.executedAt);
    const kept = record.expiresAt.getTime() - record.executedAt.getTime();
    assert.ok(kept >= 1900, `kept ${kept} ms after completion`);
  });

  test("checkExecuted / markExecuted: the first record wins", async ({ actions, action }) => {
    const key = actions.keyOf(action());
    assert.deepEqual(await actions.checkExecuted(key), { executed: false, idempotencyKey: key });
    assert.equal(await actions.markExecuted(key, { id: 7 }, 60_000), true);
    assert.equal(await actions.markExecuted(key, { id: 8 }), false);
    const check = await actions.checkExecuted(key);
    assert.equal(check.executed, true);
    assert.deepEqual(check.cachedResult, { id: 7 });
    assert.ok(check.executedAt instanceof Date);
    assert.ok((check.ttl ?? 0) > 50_000 && (check.ttl ?? 0) <= 60_000);
  });

  test("startRequest / recordSuccess / recordFailure with tool-name keys and explicit keys", async (ctx) => {
    const { actions, tag } = ctx;
    const input = { path: `/tmp/${tag}.txt`, content: "x" };
    const first = await actions.startRequest(`fs_write_${tag}`, input);
    assert.equal(first.isNewRequest, true);
    assert.match(first.key, /^tool:fs_write_[0-9a-f]{8}:[0-9a-f]{16}$/);
    const dup = await actions.startRequest(`fs_write_${tag}`, { content: "x", path: `/tmp/${tag}.txt` });
    assert.deepEqual(dup, { isNewRequest: false, inProgress: true, key: first.key });
    assert.equal(await actions.recordFailure(`fs_write_${tag}`, input, new Error("disk full")), true);
    assert.equal((await actions.getIdempotencyRecord(first.key))?.error, "Error: disk full");
    assert.equal(
      (await actions.startRequest(`fs_write_${tag}`, input)).isNewRequest,
      true,
      "retry after failure",
    );
    assert.equal(await actions.recordSuccess(`fs_write_${tag}`, input, { bytes: 1 }), true);
    assert.equal(await actions.recordSuccess(`fs_write_${tag}`, input, { bytes: 2 }), false, "no lease left");
    assert.deepEqual(await actions.startRequest(`fs_write_${tag}`, input), {
      isNewRequest: false,
      existingResponse: { bytes: 1 },
      key: first.key,
    });
    const record = await actions.getIdempotencyRecord(first.key);
    assert.deepEqual([record?.actionType, record?.target, record?.attemptCount], [
      `fs_write_${tag}`,
      "tool",
      2,
    ]);

    const explicit = `invoice-${tag}-upload`;
    const done = await actions.executeWithIdempotency(
      { key: explicit, meta: { target: `drive-${tag}` } },
      () => "file-1",
    );
    assert.equal(done.key, explicit);
    assert.deepEqual(await actions.findKeysByTarget(`drive-${tag}`), [explicit]);
  });

  test("statistics: hits, misses, duplicates, per-state counts, hit rate; resetStats", async (ctx) => {
    const { actions, action } = ctx;
    const before = await actions.getIdempotencyStats();
    const a = action();
    await actions.executeWithIdempotency(a, () => 1); // miss
    await actions.executeWithIdempotency(a, () => 1); // hit, duplicate
    await actions.executeWithIdempotency(a, () => 1); // hit, duplicate
    await actions.checkExecuted(actions.keyOf(action())); // miss
    await assert.rejects(actions.executeWithIdempotency(action(), () => Promise.reject(new Error("x")))); // miss
    const after = await actions.getIdempotencyStats();
    assert.equal(after.cacheHits - before.cacheHits, 2);
    assert.equal(after.cacheMisses - before.cacheMisses, 3);
    assert.equal(after.duplicatesPrevented - before.duplicatesPrevented, 2);
    assert.equal(after.byStatus.completed - before.byStatus.completed, 1);
    assert.equal(after.byStatus.failed - before.byStatus.failed, 1);
    assert.equal(after.totalCached - before.totalCached, 2);
    assert.ok(after.hitRate > 0 && after.hitRate < 100);
    await actions.resetStats();
    const reset = await actions.getIdempotencyStats();
    assert.deepEqual(
      [reset.cacheHits, reset.cacheMisses, reset.duplicatesPrevented, reset.expiredCleaned, reset.hitRate],
      [0, 0, 0, 0, 0],
    );
    assert.ok(reset.totalCached >= 2, "resetting counters keeps the records");
  });

  test("queries by action type, target and signal; expiring soon; cached keys by filter", async (ctx) => {
    const { actions, tag } = ctx;
    const a1 = ctx.action({ i: 1 });
    const a2 = ctx.action({ i: 2 });
    const other = { signalId: a1.signalId, actionType: `other-${tag}`, target: `slack-${tag}`, params: {} };
    const k1 = (await actions.executeWithIdempotency(a1, () => 1, { ttl: 60_000 })).key;
    const k2 = (await actions.executeWithIdempotency(a2, () => 2)).key;
    const k3 = (await actions.executeWithIdempotency(other, () => 3)).key;
    assert.deepEqual((await actions.findKeysByActionType(`type-${tag}`)).sort(), [k1, k2].sort());
    assert.deepEqual(await actions.findKeysByTarget(`slack-${tag}`), [k3]);
    assert.deepEqual((await actions.findKeysBySignalId(a1.signalId)).sort(), [k1, k3].sort());
    assert.deepEqual(await actions.findKeysByActionType(`type-${tag}`, 1).then((k) => k.length), 1, "limit");
    const soon = (await actions.getExpiringSoon(120_000)).map((r) => r.key);
    assert.ok(soon.includes(k1) && !soon.includes(k2), "only the 60 s record expires within 2 minutes");
    assert.deepEqual(await actions.getCachedKeys({ target: `slack-${tag}`, status: "completed" }), [k3]);
    assert.deepEqual(await actions.getCachedKeys({ target: `slack-${tag}`, status: "failed" }), []);
    const byPredicate = await actions.getCachedKeys(
      (r) => r.actionType === `type-${tag}` && r.result === 2,
      100_000,
    );
    assert.deepEqual(byPredicate, [k2]);
  });

  test("records: clearIdempotencyKey lets it run again, never while it runs; clearAllCache keeps live leases", async (ctx) => {
    const { actions, action } = ctx;
    const a = action();
    let runs = 0;
    const first = await actions.executeWithIdempotency(a, () => ++runs);
    assert.equal(await actions.clearIdempotencyKey(first.key), true);
    assert.equal(await actions.clearIdempotencyKey(first.key), false, "already gone");
    assert.equal((await actions.executeWithIdempotency(a, () => ++runs)).result, 2);

    let release = () => {};
    const gate = new Promise<void>((resolve) => release = resolve);
    const running = actions.executeWithIdempotency(action(), async () => {
      await gate;
      return "kept";
    });
    await sleep(50);
    const runningKey = (await actions.getCachedKeys({ status: "processing", target: a.target }))[0];
    assert.ok(runningKey);
    assert.equal(await actions.clearIdempotencyKey(runningKey), false, "a live lease is not cleared");
    const cleared = await actions.clearAllCache();
    assert.ok(cleared >= 1);
    assert.equal(await actions.getIdempotencyRecord(first.key), null);
    assert.equal((await actions.getIdempotencyRecord(runningKey))?.status, "processing");
    release();
    assert.equal((await running).result, "kept");
  });

  test("cleanupExpired removes expired records, counts them, and never a live lease", async (ctx) => {
    const { actions, store, action } = ctx;
    const before = await actions.getIdempotencyStats();
    const expired = await actions.executeWithIdempotency(action(), () => 1, { ttl: 1000 });
    const key = actions.keyOf(action());
    const meta = { actionType: null, target: null, signalId: null, paramsHash: null };
    const live = await store.claim({ key, meta, ttlMs: 1000, leaseMs: 30_000, retryFailed: true });
    assert.equal(live.outcome, "started");
    await sleep(PAST_ONE_SECOND);
    assert.ok(await actions.cleanupExpired() >= 1);
    assert.equal(await actions.getIdempotencyRecord(expired.key), null);
    const held = await store.get(key);
    assert.equal(held?.status, "processing", "past its TTL but under a live lease: kept");
    const dup = await store.claim({ key, meta, ttlMs: 1000, leaseMs: 30_000, retryFailed: true });
    assert.equal(dup.outcome, "in_progress", "expiry never pre-empts a live lease");
    const after = await actions.getIdempotencyStats();
    assert.ok(after.expiredCleaned - before.expiredCleaned >= 1);
    if (live.outcome === "started") assert.equal(await store.complete(live.lease, "1"), true);
  });

  test("getCacheInfo: size, oldest and newest, bytes", async ({ actions, action }) => {
    await actions.executeWithIdempotency(action(), () => 1);
    await sleep(5);
    await actions.executeWithIdempotency(action(), () => 2);
    const info = await actions.getCacheInfo();
    assert.ok(info.currentSize >= 2);
    assert.ok(info.oldestEntry && info.newestEntry && info.oldestEntry <= info.newestEntry);
    assert.ok(info.approximateBytes > 0);
    if (info.maxSize !== null) assert.equal(info.utilizationPercent, (info.currentSize / info.maxSize) * 100);
  });

  test("results round-trip as JSON: null, strings, arrays, nested objects", async ({ actions, action }) => {
    for (const value of [null, "text", [1, "a", { b: true }], { nested: { deep: [1.5, -2] } }, 0, false]) {
      const a = action();
      await actions.executeWithIdempotency(a, () => value);
      const replay = await actions.executeWithIdempotency(a, () => "other");
      assert.deepEqual([replay.result, replay.replayed], [value, true]);
    }
    const u = action();
    assert.equal((await actions.executeWithIdempotency(u, () => undefined)).result, undefined);
    assert.equal(
      (await actions.executeWithIdempotency(u, () => 1)).result,
      null,
      "undefined is stored as null",
    );
  });

  test("bad input: short TTL or lease is a RangeError, a malformed key INVALID_ACTION", async ({ actions, action }) => {
    await assert.rejects(actions.executeWithIdempotency(action(), () => 1, { ttl: 10 }), RangeError);
    await assert.rejects(actions.executeWithIdempotency(action(), () => 1, { leaseMs: 0 }), RangeError);
    await assert.rejects(
      actions.executeWithIdempotency({ key: "" }, () => 1),
      (e: unknown) => e instanceof IdempotencyError && e.code === "INVALID_ACTION",
    );
    await assert.rejects(
      actions.executeWithIdempotency({ signalId: "", actionType: "a", target: "t" }, () => 1),
      (e: unknown) => e instanceof IdempotencyError && e.code === "INVALID_ACTION",
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
