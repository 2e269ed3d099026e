import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createClient } from "npm:redis@5.10.0";
import { claimMaker, freeFormUserIdsAreIndependent, runStoreContract, started } from "./contract_suite.ts";
import { type RedisScriptClient, type RedisScriptOptions, RedisStore } from "./redis.ts";

const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";
/** Every key this run writes starts with it, so cleanup touches nothing else on a shared Redis. */
const PREFIX = `idem-test-${crypto.randomUUID()}:`;

async function adminClient() {
  const client = createClient({ url: REDIS_URL });
  await client.connect();
  return client;
}

/** Deletes every key of this run. */
async function deleteRunKeys(): Promise<void> {
  const client = await adminClient();
  try {
    for await (const keys of client.scanIterator({ MATCH: `${PREFIX}*`, COUNT: 500 })) {
      if (keys.length > 0) await client.del(keys);
    }
  } finally {
    await client.close();
  }
}

runStoreContract(
  "redis",
  () => Promise.resolve({ store: new RedisStore({ url: REDIS_URL, prefix: PREFIX }) }),
  {
    // Users are only part of the key name here; each case's keys go with the run's prefix.
    fixture: () =>
      Promise.resolve({ users: [crypto.randomUUID(), crypto.randomUUID()], release: deleteRunKeys }),
  },
);

const claim = claimMaker({
  keyPrefix: "redis-test-",
  functionName: "redis-test",
  fingerprint: "f".repeat(64),
});

Deno.test("redis store: a record is one hash that Redis itself expires at its TTL", async () => {
  const store = new RedisStore({ url: REDIS_URL, prefix: PREFIX });
  const admin = await adminClient();
  try {
    const user = crypto.randomUUID();
    const input = claim({ userId: user, ttlSeconds: 120 });
    const lease = started(await store.begin(input));
    assert.equal(lease.recordId, `${PREFIX}u:${user}:${input.key}`);
    assert.equal(started(await store.begin(claim({ key: "anon-key" }))).recordId, `${PREFIX}s:anon-key`);
    assert.equal(
      started(await store.begin(claim({ key: "odd-user", userId: "a:b%c" }))).recordId,
      `${PREFIX}u:a%3Ab%25c:odd-user`,
      "a user id's ':' and '%' are escaped",
    );

    const body = Uint8Array.from([0, 13, 10, 255, 128]);
    const response = { status: 200, headers: { etag: '"v1"' }, body, encoding: "identity" as const };
    assert.equal(await store.complete(lease, response), true);
    const record = await admin.hGetAll(lease.recordId);
    assert.equal(record.status, "completed");
    assert.equal(record.fingerprint, input.fingerprint);
    assert.equal(record.lease_token, undefined, "the spent lease is removed");
    assert.equal(Buffer.from(record.body ?? "", "base64").toString("hex"), "000d0aff80");
    assert.equal(
      Number(record.expires_at) - Number(record.completed_at),
      120_000,
      "kept a TTL from completion",
    );

    const ttl = await admin.pTTL(lease.recordId);
    assert.ok(ttl > 0 && ttl <= 120_000, `PTTL ${ttl}`);
    assert.equal(await admin.pExpireTime(lease.recordId), Number(record.expires_at));
    assert.equal(await store.cleanup(), 0);
  } finally {
    await store.close();
    await admin.close();
    await deleteRunKeys();
  }
});

Deno.test("redis store: the key outlives its TTL while the lease is live, then is kept a TTL from completion", async () => {
  const store = new RedisStore({ url: REDIS_URL, prefix: PREFIX });
  const admin = await adminClient();
  try {
    const input = claim({ ttlSeconds: 1, lockTimeoutSeconds: 30 });
    const lease = started(await store.begin(input));
    const leased = await admin.hGetAll(lease.recordId);
    assert.equal(
      await admin.pExpireTime(lease.recordId),
      Number(leased.locked_until),
      "expires at the lease end",
    );

    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.ok(Number(leased.expires_at) < Date.now(), "the TTL has passed");
    assert.equal(await admin.exists(lease.recordId), 1, "the key is still there under the live lease");
    assert.equal((await store.begin(input)).outcome, "in_progress");
    assert.equal(await store.status(input), null, "past its TTL it reads as gone, as on Postgres");

    // extendLease moves the key's expiry with the lease.
    assert.equal(await store.extendLease(lease, 60), true);
    const extended = Number(await admin.hGet(lease.recordId, "locked_until"));
    assert.ok(extended > Number(leased.locked_until));
    assert.equal(await admin.pExpireTime(lease.recordId), extended);

    // Finished past its TTL: the response is kept a TTL from completion, so the retry replays it; then Redis
    // drops the key and the next begin starts afresh.
    const response = { status: 200, headers: {}, body: new Uint8Array([1]), encoding: "identity" as const };
    assert.equal(await store.complete(lease, response), true);
    const done = await admin.hGetAll(lease.recordId);
    assert.equal(Number(done.expires_at) - Number(done.completed_at), 1000);
    assert.equal(await admin.pExpireTime(lease.recordId), Number(done.expires_at));
    assert.equal((await store.begin(input)).outcome, "replay");
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.equal(await admin.exists(lease.recordId), 0);
    assert.equal(started(await store.begin(input)).attempt, 1);
  } finally {
    await store.close();
    await admin.close();
    await deleteRunKeys();
  }
});

Deno.test("redis store: PEXPIREAT is max(expires_at, locked_until) on begin, takeover and extend; expires_at when finished", async () => {
  const store = new RedisStore({ url: REDIS_URL, prefix: PREFIX });
  const admin = await adminClient();
  const expiry = async (key: string) => {
    const [expiresAt, lockedUntil] = await admin.hmGet(key, ["expires_at", "locked_until"]);
    return {
      expected: Math.max(Number(expiresAt), Number(lockedUntil ?? 0)),
      actual: await admin.pExpireTime(key),
    };
  };
  try {
    // A lease longer than the TTL: the lease end decides.
    const input = claim({ ttlSeconds: 5, lockTimeoutSeconds: 30 });
    const first = started(await store.begin(input));
    const { recordId } = first;
    const [expiresAt] = await admin.hmGet(recordId, ["expires_at"]);
    let e = await expiry(recordId);
    assert.equal(e.actual, e.expected);
    assert.ok(e.actual > Number(expiresAt));

    assert.equal(await store.fail(first, { message: "boom", status: 500 }), true);
    assert.equal(await admin.pExpireTime(recordId), Number(expiresAt), "failed: back to expires_at");

    const retry = started(await store.begin(input));
    assert.equal(retry.attempt, 2);
    e = await expiry(recordId);
    assert.equal(e.actual, e.expected, "takeover");
    assert.ok(e.actual > Number(expiresAt));

    // A TTL longer than the lease: expires_at decides, also after an extension that stays below it.
    const long = started(await store.begin(claim({ ttlSeconds: 600, lockTimeoutSeconds: 30 })));
    const [longExpiresAt] = await admin.hmGet(long.recordId, ["expires_at"]);
    assert.equal(await admin.pExpireTime(long.recordId), Number(longExpiresAt));
    assert.equal(await store.extendLease(long, 60), true);
    assert.equal(await admin.pExpireTime(long.recordId), Number(longExpiresAt));
    assert.equal(await store.extendLease(long, 900), true);
    e = await expiry(long.recordId);
    assert.equal(e.actual, e.expected, "an extension past the TTL");
    assert.ok(e.actual > Number(longExpiresAt));
    const response = { status: 200, headers: {}, body: new Uint8Array([1]), encoding: "identity" as const };
    assert.equal(await store.complete(long, response), true);
    const [completedAt, completedExpiresAt] = await admin.hmGet(long.recordId, [
      "completed_at",
      "expires_at",
    ]);
    assert.equal(
      Number(completedExpiresAt),
      Number(completedAt) + 600_000,
      "completed: a TTL from completion",
    );
    assert.equal(await admin.pExpireTime(long.recordId), Number(completedExpiresAt), "completed: expires_at");
  } finally {
    await store.close();
    await admin.close();
    await deleteRunKeys();
  }
});

Deno.test('redis store: a user id of "_" or with ":" shares no record with another scope', async () => {
  const store = new RedisStore({ url: REDIS_URL, prefix: PREFIX });
  try {
    await freeFormUserIdsAreIndependent(store, `redis-scopes-${crypto.randomUUID()}`);
  } finally {
    await store.close();
    await deleteRunKeys();
  }
});

Deno.test("redis store: an unreachable Redis rejects with an error naming the store", async () => {
  const store = new RedisStore({ url: "redis://127.0.0.1:1" });
  try {
    const error = await store.begin(claim()).catch((e: unknown) => e);
    assert.ok(error instanceof Error);
    assert.match(error.message, /^redis store: begin failed: .*ECONNREFUSED/);
    assert.ok(error.cause instanceof Error, "the client's error is kept as cause");
    // The next call tries again rather than reusing a dead connection.
    await assert.rejects(store.status({ key: "any", userId: null }), /^Error: redis store: status failed/);
  } finally {
    await store.close();
  }
});

Deno.test("redis store: a server that accepts but never answers fails the call at the connect timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const url = `redis://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  const store = new RedisStore({ url, connectTimeoutSeconds: 0.2 });
  try {
    await assert.rejects(
      store.begin(claim()),
      /^Error: redis store: begin failed: no connection within 0.2s/,
    );
  } finally {
    await store.close();
    (await accepted).close();
    listener.close();
  }
});

/** A client passed in, that delegates to a real one and can simulate Redis's script cache or a stall. */
class ProbeClient implements RedisScriptClient {
  calls: string[] = [];
  constructor(private readonly real: RedisScriptClient, private readonly mode: "noscript-once" | "stall") {}

  evalSha(sha1: string, options: RedisScriptOptions): Promise<unknown> {
    this.calls.push("evalSha");
    if (this.mode === "stall") return new Promise(() => {});
    if (this.calls.length === 1) {
      return Promise.reject(new Error("NOSCRIPT No matching script. Please use EVAL."));
    }
    return this.real.evalSha(sha1, options);
  }

  eval(script: string, options: RedisScriptOptions): Promise<unknown> {
    this.calls.push("eval");
    return this.real.eval(script, options);
  }

  hmGet(key: string, fields: string[]): Promise<unknown> {
    return this.real.hmGet(key, fields);
  }
}

Deno.test("redis store: a client passed in is used, NOSCRIPT falls back to EVAL, and close() leaves it open", async () => {
  const admin = await adminClient();
  try {
    const probe = new ProbeClient(admin, "noscript-once");
    const store = new RedisStore({ client: probe, prefix: PREFIX });
    const input = claim();
    const lease = started(await store.begin(input));
    assert.deepEqual(probe.calls, ["evalSha", "eval"]);
    assert.equal((await store.begin(input)).outcome, "in_progress");
    assert.deepEqual(probe.calls, ["evalSha", "eval", "evalSha"]);
    await store.close();
    assert.equal(admin.isOpen, true);
    assert.equal(await admin.hGet(lease.recordId, "status"), "processing");
  } finally {
    await admin.close();
    await deleteRunKeys();
  }
});

Deno.test("redis store: a call without a reply rejects at the command timeout", async () => {
  const admin = await adminClient();
  try {
    const store = new RedisStore({ client: new ProbeClient(admin, "stall"), commandTimeoutSeconds: 0.2 });
    await assert.rejects(store.begin(claim()), /^Error: redis store: begin failed: no reply within 0.2s/);
    await store.close();
  } finally {
    await admin.close();
  }
});
