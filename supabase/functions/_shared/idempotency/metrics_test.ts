import assert from "node:assert/strict";
import postgres from "postgres";
import { withIdempotency } from "./middleware.ts";
import { createMetrics, type MetricsRecorder, renderPrometheus } from "./metrics.ts";
import { PostgresMetricsRecorder } from "./metrics_postgres.ts";
import { MemoryStore } from "./stores/memory.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";

function recording() {
  const counts: [string, string, number][] = [];
  const observed: [string, string, number][] = [];
  const recorder: MetricsRecorder = {
    count: (fn, outcome, by) => void counts.push([fn, outcome, by]),
    observe: (fn, histogram, seconds) => void observed.push([fn, histogram, seconds]),
  };
  return { recorder, counts, observed };
}

Deno.test("metrics: counters forward each increment to the recorder under the outcome label", () => {
  const { recorder, counts } = recording();
  const metrics = createMetrics("f", recorder);
  metrics.started++;
  metrics.storeErrors += 2;
  metrics.inFlight++;
  assert.equal(metrics.started, 1);
  assert.equal(metrics.storeErrors, 2);
  assert.deepEqual(counts, [["f", "started", 1], ["f", "store_error", 2], ["f", "in_flight", 1]]);
});

Deno.test("metrics: the middleware records outcomes and claim and handler latencies", async () => {
  const { recorder, counts, observed } = recording();
  const wrapped = withIdempotency(() => Response.json({ ok: true }, { status: 201 }), {
    functionName: "metrics-fn",
    store: new MemoryStore(),
    getUserId: () => "u1",
    metrics: recorder,
  });
  const call = async (body: string) => {
    const res = await wrapped(
      new Request("http://localhost/f", { method: "POST", headers: { "idempotency-key": "mk-1" }, body }),
    );
    await res.body?.cancel();
  };
  await call("{}");
  await call("{}");
  await call('{"other":1}');
  assert.deepEqual(counts.map(([, outcome]) => outcome), ["started", "replayed", "mismatched"]);
  assert.equal(observed.filter(([, h]) => h === "claim").length, 3);
  assert.equal(observed.filter(([, h]) => h === "handler").length, 1);
  assert.ok(observed.every(([fn, , s]) => fn === "metrics-fn" && s >= 0 && s < 5));
});

Deno.test("metrics: Prometheus text has counters, cumulative buckets and gauges per function", () => {
  const text = renderPrometheus({
    storeUp: true,
    counters: [
      { function_name: "f", metric: "outcomes_total", label: "started", value: 3 },
      { function_name: "f", metric: "claim_seconds_bucket", label: "0.001", value: 2 },
      { function_name: "f", metric: "claim_seconds_bucket", label: "+Inf", value: 3 },
      { function_name: "f", metric: "claim_seconds_sum", label: "", value: 0.5 },
      { function_name: "f", metric: "claim_seconds_count", label: "", value: 3 },
    ],
    stats: [
      {
        function_name: "f",
        total: 5,
        processing: "1",
        completed: 3,
        failed: 1,
        replays: 7,
        in_flight: 1,
        stuck: 0,
        expired_pending_cleanup: 2,
      },
      {
        function_name: "*",
        total: 5,
        processing: 1,
        completed: 3,
        failed: 1,
        replays: 7,
        in_flight: 1,
        stuck: 0,
        expired_pending_cleanup: 2,
      },
    ],
  });
  assert.match(text, /^idempotency_store_up 1$/m);
  assert.match(text, /^# TYPE idempotency_outcomes_total counter$/m);
  assert.match(text, /^idempotency_outcomes_total\{function="f",outcome="started"\} 3$/m);
  assert.match(text, /^idempotency_claim_duration_seconds_bucket\{function="f",le="0.001"\} 2$/m);
  assert.match(text, /^idempotency_claim_duration_seconds_bucket\{function="f",le="0.0005"\} 0$/m);
  assert.match(text, /^idempotency_claim_duration_seconds_count\{function="f"\} 3$/m);
  assert.match(text, /^idempotency_keys\{function="f",status="processing"\} 1$/m);
  assert.match(text, /^idempotency_keys_expired_pending_cleanup\{function="f"\} 2$/m);
  assert.doesNotMatch(text, /function="\*"/, "the total row is left to PromQL's sum");
});

Deno.test("metrics: the database recorder sums the deltas of two instances", async () => {
  const fn = `metrics-${crypto.randomUUID().slice(0, 8)}`;
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const a = new PostgresMetricsRecorder({ url: DB_URL, flushMs: 60_000 });
  const b = new PostgresMetricsRecorder({ url: DB_URL, flushMs: 60_000 });
  try {
    a.count(fn, "started", 2);
    b.count(fn, "started", 3);
    a.observe(fn, "claim", 0.002);
    b.observe(fn, "claim", 0.2);
    await Promise.all([a.flush(), b.flush()]);
    a.count(fn, "started", 1);
    await a.flush();
    const rows = await sql<{ metric: string; label: string; value: number }[]>`
      select metric, label, value from public.idempotency_metric_counters where function_name = ${fn}`;
    const value = (metric: string, label = "") =>
      rows.find((r) => r.metric === metric && r.label === label)?.value;
    assert.equal(value("outcomes_total", "started"), 6);
    assert.equal(value("claim_seconds_bucket", "0.001"), undefined, "2 ms is above the 1 ms bucket");
    assert.equal(value("claim_seconds_bucket", "0.0025"), 1);
    assert.equal(value("claim_seconds_bucket", "0.25"), 2);
    assert.equal(value("claim_seconds_bucket", "+Inf"), 2);
    assert.equal(value("claim_seconds_count"), 2);
    assert.ok(Math.abs((value("claim_seconds_sum") ?? 0) - 0.202) < 1e-9);
  } finally {
    await Promise.all([a.close(), b.close()]);
    await sql`delete from public.idempotency_metric_counters where function_name = ${fn}`;
    await sql.end();
  }
});

Deno.test("metrics: a failed flush keeps its deltas and adds them to the next one", async () => {
  const calls: unknown[][] = [];
  const errors: unknown[] = [];
  // a client whose first statement fails, as during a database outage
  const flaky = ((_strings: TemplateStringsArray, ...values: unknown[]) => {
    calls.push(values);
    return calls.length === 1 ? Promise.reject(new Error("connection refused")) : Promise.resolve([]);
  }) as unknown as postgres.Sql;
  const recorder = new PostgresMetricsRecorder({
    sql: flaky,
    flushMs: 60_000,
    onError: (e) => void errors.push(e),
  });
  recorder.count("f", "failed", 4);
  await recorder.flush();
  recorder.count("f", "failed", 1);
  await recorder.close();
  assert.equal(errors.length, 1);
  assert.equal(calls.length, 2);
  assert.deepEqual(calls[1], [["f"], ["outcomes_total"], ["failed"], [5]]);
});
