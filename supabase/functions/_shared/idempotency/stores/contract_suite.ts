/**
 * The behaviour every {@link IdempotencyStore} must share, as `Deno.test` cases: a store test file calls
 * {@link runStoreContract} once with a factory for its store.
 *
 * Cases wait in real time only in two tests (lease and TTL expiry, and a TTL that ends under a live lease,
 * about 1.1 s each), unless the store under test has a clock the suite can move.
 *
 * A store's own test file may also use {@link claimMaker} and {@link started} for its store-specific cases.
 */

import assert from "node:assert/strict";
import type { BeginInput, BeginResult, IdempotencyStore, Lease, StoredResponse } from "../store.ts";

/** A store made for one test case. */
export interface StoreUnderTest {
  /** Closed by the suite when the case ends. */
  store: IdempotencyStore;
  /** Moves the store's clock forward by `ms`; without it the suite sleeps instead. */
  advance?: (ms: number) => void;
}

/** Makes a fresh store for one case; `poolSize` is how many calls the case runs at once (50 at most). */
export type MakeStore = (options: { poolSize: number }) => Promise<StoreUnderTest>;

/** What one case needs from its environment. */
export interface ContractFixture {
  /** Two distinct user ids the store accepts (Postgres: rows in `auth.users`). */
  users: [string, string];
  /** Deletes what the case wrote: the keys it used (in every scope) and the users. */
  release(keys: string[]): Promise<void>;
}

/** Per-store setup the suite cannot know. */
export interface ContractHelpers {
  /** Prepares one case. */
  fixture(): Promise<ContractFixture>;
}

/** What a case body gets. */
interface CaseContext {
  store: IdempotencyStore;
  users: [string, string];
  /** A key no other case or run uses; remembered for `release`. */
  newKey(): string;
  /** Lets `ms` pass for the store: its clock moves, or the case sleeps. */
  wait(ms: number): Promise<void>;
}

/** Just over a 1 s lease or TTL: the shortest the stores accept. */
const PAST_ONE_SECOND = 1100;
const CONCURRENT_CALLS = 50;
const CONCURRENCY_ROUNDS = 5;

/** Registers the contract cases for the store `name` (used in test names). */
export function runStoreContract(name: string, makeStore: MakeStore, helpers: ContractHelpers): void {
  const test = (title: string, body: (ctx: CaseContext) => Promise<void>, poolSize = 5) =>
    Deno.test(`${name} store contract: ${title}`, () => runCase(makeStore, helpers, poolSize, body));

  test("rule new-key: begin on a new key starts attempt 1 with a lease of its own", startsNewKeys);
  test(
    "rule in-flight: begin under a live lease is in_progress with the lease's remaining seconds",
    inProgressUnderLease,
  );
  test(
    "rule replay: returns the stored status, headers, encoding and identical bytes",
    replaysStoredResponse,
  );
  test("rule replay: counts every replay", countsReplays);
  test("rule mismatch: another fingerprint is a mismatch while processing, completed or failed", mismatches);
  test(
    "rule retry-after-failure: fail releases the key, the retry starts attempt 2 with a new lease",
    failThenRetry,
  );
  test("complete, fail and extendLease refuse a lease that is not the current one", refusesForeignLeases);
  test("rules takeover and expired-restart: stale token refused, extended lease kept", expiry);
  test(
    "rule lease-outlives-ttl: in_progress past the TTL, and the worker still completes",
    ttlUnderLiveLease,
  );
  test("two users and the null scope hold one key independently", scopesAreIndependent);
  test("status shows the caller's own key, and null for unknown keys and other scopes", statusOfKeys);
  test("rule invalid-durations: begin rejects a ttl or lock timeout below one second", rejectsBadDurations);
  test(
    `${CONCURRENT_CALLS} concurrent begins on a fresh key: exactly one started (${CONCURRENCY_ROUNDS} keys)`,
    concurrentBegins,
    CONCURRENT_CALLS,
  );
}

/** Sets up, runs and always tears down one case, so a failing assertion leaves no connection open. */
async function runCase(
  makeStore: MakeStore,
  helpers: ContractHelpers,
  poolSize: number,
  body: (ctx: CaseContext) => Promise<void>,
): Promise<void> {
  const fixture = await helpers.fixture();
  const keys: string[] = [];
  try {
    const { store, advance } = await makeStore({ poolSize });
    try {
      await body({
        store,
        users: fixture.users,
        newKey: () => {
          const key = `contract-${crypto.randomUUID()}`;
          keys.push(key);
          return key;
        },
        wait: (ms) => advance ? Promise.resolve(advance(ms)) : sleep(ms),
      });
    } finally {
      await store.close();
    }
  } finally {
    await fixture.release(keys);
  }
}

async function startsNewKeys({ store, newKey }: CaseContext): Promise<void> {
  const first = started(await store.begin(input(newKey())));
  const second = started(await store.begin(input(newKey())));
  assert.equal(first.attempt, 1);
  assert.ok(first.recordId.length > 0 && first.leaseToken.length > 0);
  assert.notEqual(first.recordId, second.recordId);
  assert.notEqual(first.leaseToken, second.leaseToken);
}

async function inProgressUnderLease({ store, newKey }: CaseContext): Promise<void> {
  const claim = input(newKey(), { lockTimeoutSeconds: 30 });
  const lease = started(await store.begin(claim));
  const duplicate = inProgress(await store.begin(claim));
  assert.equal(duplicate.recordId, lease.recordId);
  assert.ok(duplicate.retryAfterSeconds >= 1 && duplicate.retryAfterSeconds <= 30, "retry within the lease");
}

async function replaysStoredResponse({ store, newKey }: CaseContext): Promise<void> {
  const everyByte = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
  const cases: StoredResponse[] = [
    {
      status: 201,
      headers: { "content-type": "application/octet-stream", "x-a": "1" },
      body: everyByte,
      encoding: "gzip",
    },
    {
      status: 200,
      headers: { "content-type": "application/json" },
      body: everyByte.slice(7, 340),
      encoding: "br",
    },
    {
      status: 201,
      headers: { "content-type": "application/json" },
      body: everyByte.slice(100, 290),
      encoding: "zdict",
    },
    { status: 204, headers: {}, body: new Uint8Array(0), encoding: "identity" },
    {
      status: 200,
      headers: { "content-type": "text/plain; charset=utf-8" },
      body: utf8("héllo ✓ 🎉"),
      encoding: "identity",
    },
  ];
  for (const response of cases) {
    const claim = input(newKey());
    const lease = started(await store.begin(claim));
    const stored = structuredClone(response);
    assert.equal(await store.complete(lease, stored), true);
    // What the caller does with its buffers afterwards must not reach the store.
    stored.body.fill(7);
    stored.headers["x-late"] = "changed";

    const first = replayed(await store.begin(claim));
    assert.equal(first.recordId, lease.recordId);
    assert.deepEqual(first.response, response);
    assert.ok(first.response.body instanceof Uint8Array);
    first.response.body.fill(9);
    first.response.headers["x-late"] = "changed";
    assert.deepEqual(replayed(await store.begin(claim)).response, response);
  }
}

async function countsReplays({ store, newKey }: CaseContext): Promise<void> {
  const claim = input(newKey());
  const lease = started(await store.begin(claim));
  assert.equal(await store.complete(lease, textResponse("once")), true);
  assert.equal(replayed(await store.begin(claim)).replayCount, 1);
  assert.equal(replayed(await store.begin(claim)).replayCount, 2);
  assert.equal(replayed(await store.begin(claim)).replayCount, 3);
  assert.equal((await store.status(claim))?.replayCount, 3);
}

async function mismatches({ store, newKey }: CaseContext): Promise<void> {
  const processing = input(newKey());
  const completed = input(newKey());
  const failed = input(newKey());
  const leases = [
    started(await store.begin(processing)),
    started(await store.begin(completed)),
    started(await store.begin(failed)),
  ];
  assert.equal(await store.complete(leases[1]!, textResponse("done")), true);
  assert.equal(await store.fail(leases[2]!, { message: "boom", status: 500 }), true);
  for (const [i, claim] of [processing, completed, failed].entries()) {
    const other = await store.begin({ ...claim, fingerprint: fingerprint() });
    assert.deepEqual(other, { outcome: "mismatch", recordId: leases[i]!.recordId });
  }
  // A mismatch changes nothing: the original request still gets its own outcome.
  assert.equal((await store.begin(completed)).outcome, "replay");
}

async function failThenRetry({ store, newKey }: CaseContext): Promise<void> {
  const claim = input(newKey());
  const first = started(await store.begin(claim));
  assert.equal(await store.fail(first, { message: "upstream timed out", status: 503 }), true);
  const failed = await store.status(claim);
  assert.equal(failed?.status, "failed");
  assert.equal(failed?.statusCode, 503);

  const retry = started(await store.begin(claim));
  assert.equal(retry.attempt, 2);
  assert.equal(retry.recordId, first.recordId);
  assert.notEqual(retry.leaseToken, first.leaseToken);
  assert.equal((await store.begin(claim)).outcome, "in_progress");
  assert.equal(
    await store.complete(first, textResponse("late")),
    false,
    "the failed attempt's lease is spent",
  );
  assert.equal(await store.complete(retry, textResponse("second time")), true);
  const status = await store.status(claim);
  assert.equal(status?.status, "completed");
  assert.equal(status?.attemptCount, 2);
}

async function refusesForeignLeases({ store, newKey }: CaseContext): Promise<void> {
  const claim = input(newKey());
  const lease = started(await store.begin(claim));
  const foreign: Lease[] = [
    { recordId: lease.recordId, leaseToken: crypto.randomUUID() },
    { recordId: crypto.randomUUID(), leaseToken: lease.leaseToken },
    { recordId: lease.recordId, leaseToken: "not-a-token" },
  ];
  for (const other of foreign) {
    assert.equal(await store.complete(other, textResponse("intruder")), false);
    assert.equal(await store.fail(other, { message: "intruder" }), false);
    assert.equal(await store.extendLease(other, 60), false);
  }
  assert.equal((await store.status(claim))?.status, "processing", "nothing was written");

  assert.equal(await store.complete(lease, textResponse("mine")), true);
  // Finished: the lease is spent, for the owner too.
  assert.equal(await store.complete(lease, textResponse("again")), false);
  assert.equal(await store.fail(lease, { message: "after the fact" }), false);
  assert.equal(await store.extendLease(lease, 60), false);
  assert.deepEqual(replayed(await store.begin(claim)).response.body, utf8("mine"));
}

/** One wait serves three scenarios, to keep the real-time cost of the suite near one second. */
async function expiry({ store, newKey, wait }: CaseContext): Promise<void> {
  const abandoned = input(newKey(), { lockTimeoutSeconds: 1 });
  const extended = input(newKey(), { lockTimeoutSeconds: 1 });
  const shortLived = input(newKey(), { ttlSeconds: 1, lockTimeoutSeconds: 1 });
  const stale = started(await store.begin(abandoned));
  const kept = started(await store.begin(extended));
  assert.equal(await store.extendLease(kept, 30), true);
  const finished = started(await store.begin(shortLived));
  assert.equal(await store.complete(finished, textResponse("short-lived")), true);

  await wait(PAST_ONE_SECOND);

  // The lease ran out: the same request takes the key over, and the old worker can no longer finish it.
  const takeover = started(await store.begin(abandoned));
  assert.equal(takeover.attempt, 2);
  assert.equal(takeover.recordId, stale.recordId);
  assert.notEqual(takeover.leaseToken, stale.leaseToken);
  assert.equal(await store.complete(stale, textResponse("stale")), false);
  assert.equal(await store.fail(stale, { message: "stale" }), false);
  assert.equal(await store.extendLease(stale, 30), false);
  assert.equal(await store.complete(takeover, textResponse("fresh")), true);
  assert.deepEqual(replayed(await store.begin(abandoned)).response.body, utf8("fresh"));

  // The renewed lease is still live past its original second.
  const stillRunning = inProgress(await store.begin(extended));
  assert.ok(stillRunning.retryAfterSeconds >= 1 && stillRunning.retryAfterSeconds <= 30);

  // Past its TTL the record is gone: even another request starts afresh, as attempt 1.
  assert.equal(await store.status(shortLived), null);
  const afresh = started(await store.begin({ ...shortLived, fingerprint: fingerprint() }));
  assert.equal(afresh.attempt, 1);
  assert.equal((await store.status(shortLived))?.replayCount, 0);
}

/**
 * A record counts as expired only when it is past its TTL and no worker holds a live lease on it: the TTL
 * ends while the 30 s lease still runs, so a duplicate must wait rather than run the work a second time,
 * and the worker still finishes its own attempt. Its response is then kept a full TTL from completion, so
 * the retry that follows is a replay, not a second run of work that outlasted its TTL.
 */
async function ttlUnderLiveLease({ store, newKey, wait }: CaseContext): Promise<void> {
  const claim = input(newKey(), { ttlSeconds: 1, lockTimeoutSeconds: 30 });
  const lease = started(await store.begin(claim));

  await wait(PAST_ONE_SECOND);

  const duplicate = inProgress(await store.begin(claim));
  assert.equal(duplicate.recordId, lease.recordId);
  assert.ok(duplicate.retryAfterSeconds >= 1 && duplicate.retryAfterSeconds <= 30, "retry within the lease");
  assert.equal(await store.complete(lease, textResponse("finished past its TTL")), true);

  const retry = await store.begin(claim);
  assert.equal(retry.outcome, "replay", JSON.stringify(retry));

  // a full TTL after completion, the key is free again: the next request starts afresh, as attempt 1
  await wait(PAST_ONE_SECOND);
  const afresh = started(await store.begin(claim));
  assert.equal(afresh.attempt, 1);
  assert.notEqual(afresh.leaseToken, lease.leaseToken);
}

/**
 * `store.begin` for the shared scope and for user ids a custom `getUserId` might return (any string, not
 * only UUIDs): each gets a record of its own, and completing one is replayed only to its own scope. For
 * stores that accept free-form user ids (not Postgres, whose `user_id` is a UUID).
 */
export async function freeFormUserIdsAreIndependent(store: IdempotencyStore, key: string): Promise<void> {
  const userIds = [null, "_", ":", "_:", "a", "a:b", "a%3Ab", "s", "u", "u:a", "null", ""];
  const claims = userIds.map((userId) => input(key, { userId }));
  const leases: Extract<BeginResult, { outcome: "started" }>[] = [];
  for (const claim of claims) leases.push(started(await store.begin(claim)));
  assert.equal(new Set(leases.map((l) => l.recordId)).size, userIds.length, "one record per scope");
  for (const [i, lease] of leases.entries()) {
    assert.equal(await store.complete(lease, textResponse(`for ${JSON.stringify(userIds[i])}`)), true);
  }
  for (const [i, claim] of claims.entries()) {
    const replay = replayed(await store.begin(claim));
    assert.equal(replay.recordId, leases[i]!.recordId);
    assert.deepEqual(replay.response.body, utf8(`for ${JSON.stringify(userIds[i])}`));
    assert.equal(replay.replayCount, 1, `scope ${JSON.stringify(userIds[i])} was replayed once`);
  }
}

async function scopesAreIndependent({ store, users, newKey }: CaseContext): Promise<void> {
  const key = newKey();
  const [a, b, anonymous] = [
    input(key, { userId: users[0] }),
    input(key, { userId: users[1] }),
    input(key, { userId: null }),
  ];
  const leases = [
    started(await store.begin(a)),
    started(await store.begin(b)),
    started(await store.begin(anonymous)),
  ];
  assert.equal(new Set(leases.map((l) => l.recordId)).size, 3, "one record per scope");
  assert.equal(await store.complete(leases[0]!, textResponse("for a")), true);
  assert.equal(await store.fail(leases[2]!, { message: "anonymous failed" }), true);

  assert.deepEqual(replayed(await store.begin(a)).response.body, utf8("for a"));
  assert.equal((await store.begin(b)).outcome, "in_progress");
  assert.equal(started(await store.begin(anonymous)).attempt, 2);
  assert.equal((await store.status(b))?.status, "processing");
}

async function statusOfKeys({ store, users, newKey }: CaseContext): Promise<void> {
  const claim = input(newKey(), { userId: users[0], ttlSeconds: 3600 });
  const lease = started(await store.begin(claim));
  const running = await store.status(claim);
  assert.ok(running);
  assert.equal(running.key, claim.key);
  assert.equal(running.functionName, claim.functionName);
  assert.equal(running.status, "processing");
  assert.equal(running.statusCode, null);
  assert.equal(running.completedAt, null);
  assert.equal(running.attemptCount, 1);
  assert.equal(running.replayCount, 0);
  assert.equal(running.expiresAt.getTime() - running.createdAt.getTime(), 3600 * 1000);

  assert.equal(await store.complete(lease, textResponse("done", 202)), true);
  const done = await store.status(claim);
  assert.equal(done?.status, "completed");
  assert.equal(done?.statusCode, 202);
  assert.ok(done?.completedAt instanceof Date);
  assert.ok(done.completedAt.getTime() >= done.createdAt.getTime());

  assert.equal(await store.status({ key: newKey(), userId: users[0] }), null);
  assert.equal(await store.status({ key: claim.key, userId: users[1] }), null);
  assert.equal(await store.status({ key: claim.key, userId: null }), null);
}

async function rejectsBadDurations({ store, newKey }: CaseContext): Promise<void> {
  await assert.rejects(store.begin(input(newKey(), { ttlSeconds: 0 })));
  await assert.rejects(store.begin(input(newKey(), { lockTimeoutSeconds: 0 })));
}

async function concurrentBegins({ store, users, newKey }: CaseContext): Promise<void> {
  for (let round = 0; round < CONCURRENCY_ROUNDS; round++) {
    const claim = input(newKey(), { userId: round % 2 === 0 ? users[0] : null });
    const results = await Promise.all(Array.from({ length: CONCURRENT_CALLS }, () => store.begin(claim)));
    const outcomes = results.map((r) => r.outcome);
    assert.equal(outcomes.filter((o) => o === "started").length, 1, `round ${round}: ${outcomes}`);
    assert.equal(outcomes.filter((o) => o === "in_progress").length, CONCURRENT_CALLS - 1);
    assert.equal(new Set(results.map((r) => r.recordId)).size, 1, "all calls saw one record");
  }
}

/** What a store test file's claims share; see {@link claimMaker}. */
export interface ClaimDefaults {
  /** Starts every key, before a random UUID. */
  keyPrefix: string;
  functionName: string;
  fingerprint: string;
}

/**
 * `claim(overrides)` for a store's own test file: a fresh key that starts with `keyPrefix`, no user, a
 * one-minute TTL and a live 30 s lease, with the file's function name and fingerprint, unless overridden.
 */
export function claimMaker(defaults: ClaimDefaults): (overrides?: Partial<BeginInput>) => BeginInput {
  return (overrides = {}) => ({
    key: `${defaults.keyPrefix}${crypto.randomUUID()}`,
    userId: null,
    functionName: defaults.functionName,
    fingerprint: defaults.fingerprint,
    ttlSeconds: 60,
    lockTimeoutSeconds: 30,
    ...overrides,
  });
}

/** A claim with test defaults: a live 30 s lease, a one-minute TTL, a fresh fingerprint, no user. */
function input(key: string, overrides: Partial<BeginInput> = {}): BeginInput {
  return {
    key,
    userId: null,
    functionName: "contract-test",
    fingerprint: fingerprint(),
    ttlSeconds: 60,
    lockTimeoutSeconds: 30,
    ...overrides,
  };
}

/** 64 random hex digits, the shape of a SHA-256 fingerprint. */
function fingerprint(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

function textResponse(text: string, status = 200): StoredResponse {
  return { status, headers: { "content-type": "text/plain" }, body: utf8(text), encoding: "identity" };
}

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Narrows to `started` (the lease of a new attempt), failing with the outcome that came instead. */
export function started(result: BeginResult): Extract<BeginResult, { outcome: "started" }> {
  assert.equal(result.outcome, "started", `expected started, got ${JSON.stringify(result)}`);
  return result as Extract<BeginResult, { outcome: "started" }>;
}

/** Narrows to `replay`, failing with the outcome that came instead. */
function replayed(result: BeginResult): Extract<BeginResult, { outcome: "replay" }> {
  assert.equal(result.outcome, "replay", `expected replay, got ${result.outcome}`);
  return result as Extract<BeginResult, { outcome: "replay" }>;
}

/** Narrows to `in_progress`, failing with the outcome that came instead. */
function inProgress(result: BeginResult): Extract<BeginResult, { outcome: "in_progress" }> {
  assert.equal(result.outcome, "in_progress", `expected in_progress, got ${result.outcome}`);
  return result as Extract<BeginResult, { outcome: "in_progress" }>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
