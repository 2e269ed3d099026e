/**
 * Metrics: the counters every wrapper keeps (`handler.metrics`), a hook that forwards them to a recorder,
 * the latency buckets, and the Prometheus text rendering the `idempotency-metrics` function serves. Pure:
 * no I/O here (the database recorder is in metrics_postgres.ts).
 *
 * A public import path of its own: a function author reads `handler.metrics` and never names these types;
 * whoever forwards metrics somewhere (the `metrics` option) or serves them (the `idempotency-metrics`
 * function) imports them from here.
 *
 * @module
 */

/**
 * Plain counters of what one wrapper did since it was created.
 *
 * @example Report the wrapper's counters
 * ```ts
 * import { withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const fetch = withIdempotency(() => new Response("ok"), { functionName: "f", store: new MemoryStore() });
 * const { started, replayed, bypassed } = fetch.metrics;
 * console.assert(started + replayed + bypassed === 0);
 * ```
 */
export interface IdempotencyMetrics {
  /** Handler runs under a claimed key (first attempts, retries after a failure, takeovers). */
  started: number;
  /** Requests answered with a stored response. */
  replayed: number;
  /** Requests that found their key held by a running request (answered 409, or waited). */
  inFlight: number;
  /** Requests answered 422: the key was used with another request. */
  mismatched: number;
  /** Attempts released for a retry: a 5xx, a throw, or a 4xx that is not stored. */
  failed: number;
  /** Store calls that threw (begin, complete, fail, extendLease). */
  storeErrors: number;
  /** Handler runs without idempotency because the store failed and `onStoreError` is `"fail-open"`. */
  failOpen: number;
  /** Requests whose lease was taken over while they ran: their result was not stored. */
  leaseLost: number;
  /** Requests the rollout switch sent past idempotency (disabled, or outside the rollout percentage). */
  bypassed: number;
}

/**
 * The Prometheus `outcome` label of each counter.
 *
 * @example The label of a counter
 * ```ts
 * import { OUTCOME_LABELS } from "./metrics.ts";
 *
 * console.assert(OUTCOME_LABELS.inFlight === "in_flight");
 * ```
 */
export const OUTCOME_LABELS: Readonly<Record<keyof IdempotencyMetrics, string>> = Object.freeze({
  started: "started",
  replayed: "replayed",
  inFlight: "in_flight",
  mismatched: "mismatched",
  failed: "failed",
  storeErrors: "store_error",
  failOpen: "fail_open",
  leaseLost: "lease_lost",
  bypassed: "bypassed",
});

/**
 * The latency histograms: the store claim (`begin`), and the handler.
 *
 * @example The two histograms
 * ```ts
 * import type { LatencyHistogram } from "./metrics.ts";
 *
 * const histograms: LatencyHistogram[] = ["claim", "handler"];
 * console.assert(histograms.length === 2);
 * ```
 */
export type LatencyHistogram = "claim" | "handler";

/**
 * Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
 *
 * @example The buckets rise
 * ```ts
 * import { LATENCY_BUCKETS } from "./metrics.ts";
 *
 * console.assert(LATENCY_BUCKETS.every((le, i) => i === 0 || le > LATENCY_BUCKETS[i - 1]!));
 * ```
 */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
]);

/**
 * Where a wrapper sends its counts and latencies besides its own `metrics` object.
 *
 * @example A recorder that logs
 * ```ts
 * import type { MetricsRecorder } from "./metrics.ts";
 *
 * const log: string[] = [];
 * const recorder: MetricsRecorder = {
 *   count: (fn, outcome, by) => void log.push(`${fn} ${outcome} +${by}`),
 *   observe: (fn, histogram, seconds) => void log.push(`${fn} ${histogram} ${seconds}s`),
 * };
 * recorder.count("process-document", "started", 1);
 * console.assert(log[0] === "process-document started +1");
 * ```
 */
export interface MetricsRecorder {
  /**
   * Adds `by` to the counter of `outcome` for `functionName`.
   * @param functionName The edge function's name.
   * @param outcome One of {@link OUTCOME_LABELS}' values.
   * @param by How much to add.
   */
  count(functionName: string, outcome: string, by: number): void;
  /**
   * Records one latency.
   * @param functionName The edge function's name.
   * @param histogram Which histogram.
   * @param seconds The latency.
   */
  observe(functionName: string, histogram: LatencyHistogram, seconds: number): void;
}

/**
 * A {@link IdempotencyMetrics} whose counters also feed `recorder`: each field is an accessor, so the
 * middleware's `metrics.started++` reaches the recorder with no change at the place it counts.
 *
 * @param functionName The label every count carries.
 * @param recorder Where counts go; none: plain counters.
 * @returns Counters starting at zero.
 * @example Counters that feed a recorder
 * ```ts
 * const metrics = createMetrics("f", { count() {}, observe() {} });
 * metrics.started++;
 * ```
 */
export function createMetrics(functionName: string, recorder?: MetricsRecorder): IdempotencyMetrics {
  const values = Object.fromEntries(Object.keys(OUTCOME_LABELS).map((name) => [name, 0])) as Record<
    keyof IdempotencyMetrics,
    number
  >;
  if (!recorder) return values;
  const metrics = {} as IdempotencyMetrics;
  for (const name of Object.keys(OUTCOME_LABELS) as (keyof IdempotencyMetrics)[]) {
    Object.defineProperty(metrics, name, {
      enumerable: true,
      get: () => values[name],
      set: (next: number) => {
        const delta = next - values[name];
        values[name] = next;
        if (delta > 0) recorder.count(functionName, OUTCOME_LABELS[name], delta);
      },
    });
  }
  return metrics;
}

/**
 * One stored counter row, as `idempotency_metric_counters` holds it.
 *
 * @example Three first runs of one function
 * ```ts
 * import type { CounterRow } from "./metrics.ts";
 *
 * const row: CounterRow = { function_name: "charge", metric: "outcomes_total", label: "started", value: 3 };
 * console.assert(row.value === 3);
 * ```
 */
export interface CounterRow {
  /** The edge function. */
  function_name: string;
  /** `outcomes_total`, `<histogram>_seconds_bucket`, `_sum` or `_count`. */
  metric: string;
  /** The outcome, the bucket's `le`, or `''`. */
  label: string;
  /** The summed value. */
  value: number;
}

/**
 * One row of `v_idempotency_stats` (numbers may arrive as strings from bigint columns).
 *
 * @example A function with one completed key
 * ```ts
 * import type { StatsRow } from "./metrics.ts";
 *
 * const row: StatsRow = {
 *   function_name: "charge", total: 1, processing: 0, completed: 1, failed: 0, replays: "2", in_flight: 0,
 *   stuck: 0, expired_pending_cleanup: 0,
 * };
 * console.assert(Number(row.replays) === 2);
 * ```
 */
export interface StatsRow {
  /** The function, or `*` for the total row (skipped: PromQL sums). */
  function_name: string;
  /** Rows. */
  total: number | string;
  /** Rows by status. */
  processing: number | string;
  /** Rows by status. */
  completed: number | string;
  /** Rows by status. */
  failed: number | string;
  /** Sum of replay counts. */
  replays: number | string;
  /** Processing under a live lease. */
  in_flight: number | string;
  /** Processing with an expired lease. */
  stuck: number | string;
  /** What cleanup would delete now. */
  expired_pending_cleanup: number | string;
}

/**
 * What {@link renderPrometheus} renders.
 *
 * @example The database did not answer
 * ```ts
 * import { type MetricsSnapshot, renderPrometheus } from "./metrics.ts";
 *
 * const down: MetricsSnapshot = { counters: [], stats: [], storeUp: false };
 * console.assert(renderPrometheus(down).includes("idempotency_store_up 0"));
 * ```
 */
export interface MetricsSnapshot {
  /** The counters summed over every instance; empty when the database could not be read. */
  counters: CounterRow[];
  /** The stats view's rows. */
  stats: StatsRow[];
  /** Whether the database answered. */
  storeUp: boolean;
  /** The end of the last successful cleanup run, epoch seconds, when known. */
  lastCleanupSuccess?: number | null;
}

/**
 * The snapshot in the Prometheus text exposition format (version 0.0.4).
 *
 * @param snapshot Counters, stats and store health.
 * @returns The text body, ending with a newline.
 * @example Render an empty snapshot
 * ```ts
 * renderPrometheus({ counters: [], stats: [], storeUp: true });
 * ```
 */
export function renderPrometheus(snapshot: MetricsSnapshot): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  family("idempotency_store_up", "gauge", "1 when the idempotency database answered this scrape, else 0.");
  out.push(`idempotency_store_up ${snapshot.storeUp ? 1 : 0}`);

  family(
    "idempotency_outcomes_total",
    "counter",
    "Requests by outcome, summed over every function instance.",
  );
  for (const row of snapshot.counters.filter((r) => r.metric === "outcomes_total")) {
    out.push(
      sample("idempotency_outcomes_total", { function: row.function_name, outcome: row.label }, row.value),
    );
  }
  for (const histogram of ["claim", "handler"] as const) {
    renderHistogram(out, family, histogram, snapshot.counters);
  }
  const gauges: [keyof StatsRow, string, string][] = [
    ["in_flight", "idempotency_keys_in_flight", "Keys processing under a live lease."],
    ["stuck", "idempotency_keys_stuck", "Keys processing whose lease ran out (their worker died)."],
    [
      "expired_pending_cleanup",
      "idempotency_keys_expired_pending_cleanup",
      "Expired keys cleanup will delete.",
    ],
    ["replays", "idempotency_keys_replays", "Sum of replay counts of the stored keys."],
  ];
  const stats = snapshot.stats.filter((row) => row.function_name !== "*");
  family("idempotency_keys", "gauge", "Stored keys by status.");
  for (const row of stats) {
    for (const status of ["processing", "completed", "failed"] as const) {
      out.push(sample("idempotency_keys", { function: row.function_name, status }, Number(row[status])));
    }
  }
  for (const [column, name, help] of gauges) {
    family(name, "gauge", help);
    for (const row of stats) out.push(sample(name, { function: row.function_name }, Number(row[column])));
  }
  if (snapshot.lastCleanupSuccess !== undefined && snapshot.lastCleanupSuccess !== null) {
    family(
      "idempotency_cleanup_last_success_timestamp_seconds",
      "gauge",
      "End of the last successful cleanup job run.",
    );
    out.push(`idempotency_cleanup_last_success_timestamp_seconds ${snapshot.lastCleanupSuccess}`);
  }
  return `${out.join("\n")}\n`;
}

function renderHistogram(
  out: string[],
  family: (name: string, type: string, help: string) => void,
  histogram: LatencyHistogram,
  counters: CounterRow[],
): void {
  const name = `idempotency_${histogram}_duration_seconds`;
  family(
    name,
    "histogram",
    histogram === "claim" ? "Latency of the store claim (begin)." : "Handler latency.",
  );
  const functions = [
    ...new Set(
      counters.filter((r) => r.metric.startsWith(`${histogram}_seconds`)).map((r) => r.function_name),
    ),
  ].sort();
  for (const fn of functions) {
    const rows = counters.filter((r) => r.function_name === fn);
    const value = (metric: string, label = "") =>
      rows.find((r) => r.metric === `${histogram}_seconds_${metric}` && r.label === label)?.value ?? 0;
    for (const le of [...LATENCY_BUCKETS.map(String), "+Inf"]) {
      out.push(sample(`${name}_bucket`, { function: fn, le }, value("bucket", le)));
    }
    out.push(sample(`${name}_sum`, { function: fn }, value("sum")));
    out.push(sample(`${name}_count`, { function: fn }, value("count")));
  }
}

function sample(name: string, labels: Record<string, string>, value: number): string {
  const text = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
  return `${name}{${text}} ${Number.isFinite(value) ? value : 0}`;
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}
