import assert from "node:assert/strict";
import { withIdempotency } from "./middleware.ts";
import { inRollout, rolloutSetting } from "./rollout.ts";
import { MemoryStore } from "./stores/memory.ts";

const env = (vars: Record<string, string>) => (name: string) => vars[name];
const DEFAULT = { enabled: true, percent: 100 };

Deno.test("rollout: the function's variable beats the global one, which beats the options", () => {
  assert.deepEqual(rolloutSetting("process-document", DEFAULT, env({})), DEFAULT);
  assert.deepEqual(
    rolloutSetting(
      "process-document",
      DEFAULT,
      env({ IDEMPOTENCY_ENABLED: "false", IDEMPOTENCY_ROLLOUT_PERCENT: "25" }),
    ),
    { enabled: false, percent: 25 },
  );
  assert.deepEqual(
    rolloutSetting(
      "process-document",
      DEFAULT,
      env({
        IDEMPOTENCY_ENABLED: "false",
        IDEMPOTENCY_ENABLED_PROCESS_DOCUMENT: "on",
        IDEMPOTENCY_ROLLOUT_PERCENT: "25",
        IDEMPOTENCY_ROLLOUT_PERCENT_PROCESS_DOCUMENT: "12.5%",
      }),
    ),
    { enabled: true, percent: 12.5 },
  );
});

Deno.test("rollout: a malformed variable is ignored, never fatal", () => {
  const setting = rolloutSetting(
    "f",
    { enabled: false, percent: 40 },
    env({
      IDEMPOTENCY_ENABLED: "maybe",
      IDEMPOTENCY_ROLLOUT_PERCENT: "150",
      IDEMPOTENCY_ROLLOUT_PERCENT_F: "abc",
    }),
  );
  assert.deepEqual(setting, { enabled: false, percent: 40 });
});

Deno.test("rollout: deterministic per key, and close to the asked share", () => {
  let admitted = 0;
  for (let i = 0; i < 20_000; i++) {
    const key = `key-${i}`;
    const first = inRollout("f", key, 30);
    assert.equal(inRollout("f", key, 30), first);
    if (first) admitted++;
    // a key inside 30% stays inside any larger share
    if (first) assert.ok(inRollout("f", key, 60));
  }
  assert.ok(admitted > 5_600 && admitted < 6_400, `30% of 20000 keys, got ${admitted}`);
  assert.equal(inRollout("f", "k", 0), false);
  assert.equal(inRollout("f", "k", 100), true);
});

function counting(options: { enabled?: boolean; rolloutPercent?: number; functionName: string }) {
  const runs = new Map<string, number>();
  const wrapped = withIdempotency((req) => {
    const key = req.headers.get("idempotency-key") ?? "";
    runs.set(key, (runs.get(key) ?? 0) + 1);
    return Response.json({ ok: true }, { status: 201 });
  }, { ...options, store: new MemoryStore(), getUserId: () => "u1", logger: { error() {}, warn() {} } });
  const call = async (key: string) => {
    const res = await wrapped(
      new Request("http://localhost/f", { method: "POST", headers: { "idempotency-key": key }, body: "{}" }),
    );
    await res.body?.cancel();
    return res;
  };
  return { wrapped, runs, call };
}

Deno.test("rollout via the middleware: at 50%, a bypassed key runs on every retry, a protected one once", async () => {
  const { wrapped, runs, call } = counting({ functionName: "rollout-half", rolloutPercent: 50 });
  const keys = Array.from({ length: 40 }, (_, i) => `rollout-key-${i}`);
  for (const key of keys) for (let i = 0; i < 3; i++) await call(key);
  const bypassedKeys = keys.filter((k) => !inRollout("rollout-half", k, 50));
  assert.ok(bypassedKeys.length > 0 && bypassedKeys.length < keys.length);
  for (const key of keys) assert.equal(runs.get(key), bypassedKeys.includes(key) ? 3 : 1, key);
  assert.equal(wrapped.metrics.bypassed, bypassedKeys.length * 3);
  assert.equal(wrapped.metrics.started, keys.length - bypassedKeys.length);
});

Deno.test("rollout via the middleware: an environment change applies to the next request, no redeploy", async () => {
  const name = "IDEMPOTENCY_ENABLED_ROLLOUT_ENV";
  const { wrapped, runs, call } = counting({ functionName: "rollout-env" });
  try {
    await call("env-key-1");
    await call("env-key-1");
    assert.equal(runs.get("env-key-1"), 1, "on: the retry replays");
    Deno.env.set(name, "false");
    await call("env-key-1");
    assert.equal(runs.get("env-key-1"), 2, "off: the same wrapped handler runs it again");
    assert.equal(wrapped.metrics.bypassed, 1);
    Deno.env.set(name, "true");
    const res = await call("env-key-1");
    assert.equal(res.headers.get("x-idempotency-replay"), "true", "on again: replays");
    assert.equal(runs.get("env-key-1"), 2);
  } finally {
    Deno.env.delete(name);
  }
});

Deno.test("rollout via the middleware: enabled: false bypasses even an invalid key header", async () => {
  const { wrapped, call } = counting({ functionName: "rollout-off", enabled: false });
  const res = await call("!!");
  assert.equal(res.status, 201);
  assert.equal(wrapped.metrics.bypassed, 1);
});
