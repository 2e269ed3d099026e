/**
 * Model-based test of the store contract (docs/faults.md): fast-check draws random sequences of begin,
 * complete, fail, extendLease, clock moves and cleanup, by three workers on two keys with two request
 * fingerprints, and checks every step of a real store against a small reference model of the documented
 * rules (docs/guide.md, "What happens in each case"; the same rules as `idempotency_begin`).
 *
 * The in-memory store runs with a manual clock, so leases and TTLs expire inside a sequence. Redis and
 * Postgres read their server's clock, which a test cannot move: they run the same sequences without clock
 * moves (leases and TTLs of an hour), against the real servers of the stack.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type {
  BeginResult,
  IdempotencyStore,
  Lease,
} from "../../supabase/functions/_shared/idempotency/store.ts";
import { MemoryStore } from "../../supabase/functions/_shared/idempotency/stores/memory.ts";
import { PostgresStore } from "../../supabase/functions/_shared/idempotency/stores/postgres.ts";
import { RedisStore } from "../../supabase/functions/_shared/idempotency/stores/redis.ts";

const RUNS = Number(Deno.env.get("PROPERTY_RUNS") ?? 300);
const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";
const FINGERPRINTS = ["a".repeat(64), "b".repeat(64)];
const RESPONSE = {
  status: 201,
  headers: { "content-type": "text/plain" },
  body: new Uint8Array([111, 107]),
  encoding: "identity" as const,
};

/** One record of the reference model. */
interface ModelRecord {
  fingerprint: string;
  status: "processing" | "completed" | "failed";
  token: number | null;
  lockedUntil: number;
  attempt: number;
  replays: number;
  createdAt: number;
  expiresAt: number;
}

/** The reference model: the documented rules, in milliseconds of a manual clock. */
class Model {
  now = 0;
  records = new Map<string, ModelRecord>();
  /** The model lease token each worker holds (the real lease is kept beside it). */
  leases = new Map<number, { key: string; token: number }>();
  #tokens = 0;

  constructor(readonly ttlMs: number, readonly lockMs: number) {}

  #live(r: ModelRecord): boolean {
    return r.status === "processing" && r.lockedUntil > this.now;
  }

  begin(key: string, fingerprint: string, worker: number): BeginResult["outcome"] {
    const r = this.records.get(key);
    if (!r || (r.expiresAt <= this.now && !this.#live(r))) {
      this.records.set(key, {
        fingerprint,
        status: "processing",
        token: this.#lease(worker, key),
        lockedUntil: this.now + this.lockMs,
        attempt: 1,
        replays: 0,
        createdAt: this.now,
        expiresAt: this.now + this.ttlMs,
      });
      return "started";
    }
    if (r.fingerprint !== fingerprint) return "mismatch";
    if (r.status === "failed" || (r.status === "processing" && !this.#live(r))) {
      Object.assign(r, {
        status: "processing",
        token: this.#lease(worker, key),
        lockedUntil: this.now + this.lockMs,
        attempt: r.attempt + 1,
      });
      return "started";
    }
    if (r.status === "completed") {
      r.replays++;
      return "replay";
    }
    return "in_progress";
  }

  #lease(worker: number, key: string): number {
    const token = ++this.#tokens;
    this.leases.set(worker, { key, token });
    return token;
  }

  /** The record `worker`'s lease still owns, if any. */
  owned(worker: number): ModelRecord | undefined {
    const lease = this.leases.get(worker);
    const r = lease && this.records.get(lease.key);
    return r && r.status === "processing" && r.token === lease.token ? r : undefined;
  }

  cleanup(): number {
    let deleted = 0;
    for (const [key, r] of this.records) {
      if (r.expiresAt <= this.now && !this.#live(r)) {
        this.records.delete(key);
        deleted++;
      }
    }
    return deleted;
  }
}

/** The store under test with each worker's real lease and the keys of this run. */
interface Real {
  store: IdempotencyStore;
  keys: string[];
  leases: Map<number, Lease>;
  advance?: (ms: number) => void;
}

type Step = fc.AsyncCommand<Model, Real>;

/** A command from a label and a body: fast-check prints the label in a counterexample. */
function command(label: string, run: (m: Model, r: Real) => Promise<void>): Step {
  return { check: () => true, run, toString: () => label };
}

const begin = (k: number, f: number, w: number) =>
  command(`begin(key${k}, fp${f}, worker${w})`, async (m, r) => {
    const result = await r.store.begin({
      key: r.keys[k]!,
      userId: null,
      functionName: "model",
      fingerprint: FINGERPRINTS[f]!,
      ttlSeconds: m.ttlMs / 1000,
      lockTimeoutSeconds: m.lockMs / 1000,
    });
    const expected = m.begin(r.keys[k]!, FINGERPRINTS[f]!, w);
    assert.equal(result.outcome, expected);
    const record = m.records.get(r.keys[k]!)!;
    if (result.outcome === "started") {
      r.leases.set(w, { recordId: result.recordId, leaseToken: result.leaseToken });
      assert.equal(result.attempt, record.attempt);
    }
    if (result.outcome === "replay") assert.equal(result.replayCount, record.replays);
    if (result.outcome === "in_progress") {
      assert.equal(result.retryAfterSeconds, Math.max(1, Math.ceil((record.lockedUntil - m.now) / 1000)));
    }
  });

const finish = (how: "complete" | "fail" | "extendLease", w: number) =>
  command(`${how}(worker${w})`, async (m, r) => {
    const lease = r.leases.get(w);
    if (!lease) return;
    const owned = m.owned(w);
    const ok = how === "complete"
      ? await r.store.complete(lease, RESPONSE)
      : how === "fail"
      ? await r.store.fail(lease, { message: "model", status: 500 })
      : await r.store.extendLease(lease, m.lockMs / 1000);
    assert.equal(ok, owned !== undefined, `${how} by worker${w}`);
    if (!owned) return;
    if (how === "complete") {
      owned.status = "completed";
      owned.expiresAt = Math.max(owned.expiresAt, m.now + owned.expiresAt - owned.createdAt);
    }
    if (how === "complete" || how === "fail") {
      if (how === "fail") owned.status = "failed";
      owned.token = null;
    } else {
      owned.lockedUntil = m.now + m.lockMs;
    }
  });

const advance = (ms: number) =>
  command(`advance(${ms})`, (m, r) => {
    m.now += ms;
    r.advance!(ms);
    return Promise.resolve();
  });

const cleanup = command("cleanup()", async (m, r) => {
  assert.equal(await r.store.cleanup(), m.cleanup());
});

const worker = fc.integer({ min: 0, max: 2 });
const bit = fc.integer({ min: 0, max: 1 });
const stateSteps = [
  fc.tuple(bit, bit, worker).map(([k, f, w]) => begin(k, f, w)),
  worker.map((w) => finish("complete", w)),
  worker.map((w) => finish("fail", w)),
  worker.map((w) => finish("extendLease", w)),
];
/** With a manual clock: clock moves around the 2 s lease and 5 s TTL, and cleanup. */
const clockSteps = [
  ...stateSteps,
  fc.integer({ min: 1, max: 6 }).map((s) => advance(s * 500)),
  fc.constant(cleanup),
];

async function check(
  makeStore: () => { store: IdempotencyStore; advance?: (ms: number) => void },
  steps: fc.Arbitrary<Step>[],
  timing: { ttlMs: number; lockMs: number },
  numRuns: number,
): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.commands(steps, { maxCommands: 40 }), async (commands) => {
      const { store, advance } = makeStore();
      const run = crypto.randomUUID().slice(0, 8);
      const real: Real = { store, keys: [`model-${run}-0`, `model-${run}-1`], leases: new Map() };
      if (advance) real.advance = advance;
      try {
        await fc.asyncModelRun(() => ({ model: new Model(timing.ttlMs, timing.lockMs), real }), commands);
      } finally {
        await store.close();
      }
    }),
    { numRuns },
  );
}

Deno.test("store model: the in-memory store, with a manual clock, follows the reference model", async () => {
  await check(
    () => {
      let now = 1_000_000;
      return { store: new MemoryStore({ now: () => now }), advance: (ms) => (now += ms) };
    },
    clockSteps,
    { ttlMs: 5000, lockMs: 2000 },
    RUNS,
  );
});

Deno.test("store model: the Redis store follows the reference model (no clock moves)", async () => {
  await check(
    () => ({ store: new RedisStore({ url: REDIS_URL, prefix: "model-test:" }) }),
    stateSteps,
    { ttlMs: 3_600_000, lockMs: 3_600_000 },
    Math.ceil(RUNS / 6),
  );
});

Deno.test("store model: the Postgres store follows the reference model (no clock moves)", async () => {
  await check(
    () => ({ store: new PostgresStore({ url: DB_URL, max: 2 }) }),
    stateSteps,
    { ttlMs: 3_600_000, lockMs: 3_600_000 },
    Math.ceil(RUNS / 6),
  );
  await new Promise((resolve) => setTimeout(resolve, 0));
});
