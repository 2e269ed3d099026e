import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- a full specifier, so a function resolves it from its own deno.json
import { createClient } from "npm:redis@5.10.0";
import { DEFAULT_ACTION_CONFIG } from "./config.ts";
import { runActionContract } from "./contract_suite.ts";
import { closeDefaultActions, configure, defaultActions } from "./default.ts";
import {
  checkExecuted,
  clearIdempotencyKey,
  executeWithIdempotency,
  findKeysBySignalId,
} from "./functions.ts";
import { RedisActionStore } from "./redis.ts";

const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";
/** Each case gets its own key space, deleted at the end of the run. */
const RUN = `actions-test-${crypto.randomUUID().slice(0, 8)}`;
let cases = 0;

runActionContract("redis", () => new RedisActionStore({ url: REDIS_URL, prefix: `${RUN}-${cases++}` }));

Deno.test("redis action store: a record is a hash with its indexes, expired by Redis itself", async () => {
  const prefix = `${RUN}-layout`;
  const store = new RedisActionStore({ url: REDIS_URL, prefix });
  const admin = createClient({ url: REDIS_URL });
  await admin.connect();
  try {
    const meta = {
      actionType: "create_task",
      target: "trello",
      signalId: "s-1",
      paramsHash: "0123456789abcdef",
    };
    const key = "s-1:create_task:trello:0123456789abcdef";
    const c = await store.claim({ key, meta, ttlMs: 60_000, leaseMs: 5000, retryFailed: true });
    assert.equal(c.outcome, "started");
    const hash = `{${prefix}}:r:${key}`;
    assert.equal(await admin.hGet(hash, "status"), "processing");
    const pttl = await admin.pTTL(hash);
    assert.ok(pttl > 60_000 && pttl <= 60_000 + 3_600_000, "kept an hour past expiry for cleanup to index");
    assert.ok(await admin.zScore(`{${prefix}}:ix:type:create_task`, key));
    assert.ok(await admin.zScore(`{${prefix}}:ix:st:processing`, key));
    if (c.outcome === "started") await store.complete(c.lease, "{}");
    assert.equal(await admin.zScore(`{${prefix}}:ix:st:processing`, key), null, "moved between state sets");
    assert.ok(await admin.zScore(`{${prefix}}:ix:st:completed`, key));
    assert.equal(await store.delete(key), true);
    assert.deepEqual(await admin.keys(`{${prefix}}:*`), [`{${prefix}}:stats`], "only the counters remain");
  } finally {
    await store.close();
    await admin.close();
  }
});

Deno.test("redis action store: cleanup of the run's keys", async () => {
  const admin = createClient({ url: REDIS_URL });
  await admin.connect();
  try {
    for await (const keys of admin.scanIterator({ MATCH: `{${RUN}*`, COUNT: 500 })) {
      if (keys.length > 0) await admin.del(keys);
    }
    assert.deepEqual(await admin.keys(`{${RUN}*`), []);
  } finally {
    await admin.close();
  }
});

Deno.test("the seeds' free functions on the default manager, configured for Redis (imported on demand)", async () => {
  configure({ backend: "redis", redisUrl: REDIS_URL, enableAutoCleanup: false });
  try {
    const action = { signalId: `free-${RUN}`, actionType: "notify", target: "slack", params: { to: "ops" } };
    let runs = 0;
    const first = await executeWithIdempotency(action, () => ++runs);
    const again = await executeWithIdempotency(action, () => ++runs);
    assert.deepEqual([first.replayed, again.replayed, again.result, runs], [false, true, 1, 1]);
    assert.equal((await defaultActions()).store.name, "redis");
    assert.deepEqual(await findKeysBySignalId(`free-${RUN}`), [first.key]);
    assert.equal((await checkExecuted(first.key)).executed, true);
    assert.equal(await clearIdempotencyKey(first.key), true);
  } finally {
    await closeDefaultActions();
    configure({ ...DEFAULT_ACTION_CONFIG });
  }
});
