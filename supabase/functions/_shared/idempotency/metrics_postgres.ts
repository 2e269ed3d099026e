/**
 * The database metrics recorder: counts and latencies are summed in memory and added to
 * `idempotency_metric_counters` every `flushMs`, so the totals are those of every instance together, and a
 * Prometheus scrape that lands on any instance reads the same numbers.
 *
 * Why the database rather than a label per instance: Supabase routes a scrape to any one instance, never to
 * each, and instances come and go with traffic; per-instance series would be read at random and vanish with
 * their instance. A sum in the database costs one statement per instance every few seconds.
 */

// deno-lint-ignore no-import-prefix -- functions pin npm packages by full specifier (deploy convention)
import postgres from "npm:postgres@3.4.9";
import { LATENCY_BUCKETS, type LatencyHistogram, type MetricsRecorder } from "./metrics.ts";
import { openPool, sharedPool } from "./pool.ts";

/** Options of {@link PostgresMetricsRecorder}. */
export interface PostgresMetricsRecorderOptions {
  /**
   * A connection string for a pool of its own (one connection), ended by `close()`.
   * @default the isolate's shared pool (pool.ts) on `SUPABASE_DB_URL`
   */
  url?: string;
  /** A client you already have (then `url` is unused and `close()` leaves it open). */
  sql?: postgres.Sql;
  /**
   * How often deltas are written, in milliseconds: what an instance that dies may lose, at most.
   * @default 5000, or `IDEMPOTENCY_METRICS_FLUSH_MS`
   */
  flushMs?: number;
  /** Where a failed flush is reported (its deltas are kept for the next one). @default console.error */
  onError?: (error: unknown) => void;
}

/** Deltas by `function \u0000 metric \u0000 label`. */
type Deltas = Map<string, number>;

/**
 * A {@link MetricsRecorder} that sums into the database. Writes nothing until something is counted; a
 * flush that fails keeps its deltas for the next one, so an outage delays counts rather than losing them.
 *
 * @example Record into the database
 * ```ts
 * const recorder = new PostgresMetricsRecorder({ flushMs: 1000 });
 * recorder.count("process-document", "started", 1);
 * await recorder.close();
 * ```
 */
export class PostgresMetricsRecorder implements MetricsRecorder {
  readonly #url: string | undefined;
  readonly #flushMs: number;
  readonly #onError: (error: unknown) => void;
  readonly #ownsClient: boolean;
  #sql: postgres.Sql | undefined;
  #pending: Deltas = new Map();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushing: Promise<void> = Promise.resolve();

  /**
   * A recorder that opens no connection until its first flush.
   *
   * @param options Connection and flush interval.
   * @throws {RangeError} when `flushMs` is not a positive integer.
   */
  constructor(options: PostgresMetricsRecorderOptions = {}) {
    this.#sql = options.sql;
    this.#ownsClient = options.sql === undefined && options.url !== undefined;
    this.#url = options.url;
    this.#flushMs = options.flushMs ?? Number(readEnv("IDEMPOTENCY_METRICS_FLUSH_MS") ?? 5000);
    this.#onError = options.onError ??
      ((error) => console.error("[idempotency] metrics flush failed", error));
    if (!Number.isInteger(this.#flushMs) || this.#flushMs < 1) {
      throw new RangeError(`flushMs must be a positive integer, got ${this.#flushMs}`);
    }
  }

  /** Adds to an outcome counter. */
  count(functionName: string, outcome: string, by: number): void {
    this.#add(functionName, "outcomes_total", outcome, by);
  }

  /** Adds one latency to its cumulative buckets, sum and count. */
  observe(functionName: string, histogram: LatencyHistogram, seconds: number): void {
    const metric = `${histogram}_seconds`;
    for (const le of LATENCY_BUCKETS) {
      if (seconds <= le) this.#add(functionName, `${metric}_bucket`, String(le), 1);
    }
    this.#add(functionName, `${metric}_bucket`, "+Inf", 1);
    this.#add(functionName, `${metric}_sum`, "", seconds);
    this.#add(functionName, `${metric}_count`, "", 1);
  }

  /** Writes the pending deltas now (after any flush under way). */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#write());
    return this.#flushing;
  }

  /** Flushes, then ends the pool this recorder opened. */
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.flush();
    if (this.#ownsClient) await this.#sql?.end({ timeout: 5 });
    this.#sql = undefined;
  }

  #add(functionName: string, metric: string, label: string, by: number): void {
    if (!(by > 0)) return;
    const id = `${functionName}\u0000${metric}\u0000${label}`;
    this.#pending.set(id, (this.#pending.get(id) ?? 0) + by);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, this.#flushMs);
    // a pending flush never keeps a process alive by itself
    Deno.unrefTimer(this.#timer as unknown as number);
  }

  async #write(): Promise<void> {
    if (this.#pending.size === 0) return;
    const batch = this.#pending;
    this.#pending = new Map();
    const columns: [string[], string[], string[], number[]] = [[], [], [], []];
    for (const [id, delta] of batch) {
      const [fn = "", metric = "", label = ""] = id.split("\u0000");
      columns[0].push(fn);
      columns[1].push(metric);
      columns[2].push(label);
      columns[3].push(delta);
    }
    try {
      await this.#client()`select public.idempotency_metrics_add(
        ${columns[0]}::text[], ${columns[1]}::text[], ${columns[2]}::text[], ${columns[3]}::float8[])`;
    } catch (error) {
      for (const [id, delta] of batch) this.#pending.set(id, (this.#pending.get(id) ?? 0) + delta);
      this.#schedule();
      this.#onError(error);
    }
  }

  #client(): postgres.Sql {
    // the isolate's one pool (pool.ts), shared with the store and the function, unless given a URL of its own
    this.#sql ??= this.#url === undefined ? sharedPool() : openPool({ url: this.#url, max: 1 });
    return this.#sql;
  }
}

/** The shared recorder of this isolate, when `IDEMPOTENCY_METRICS=database`: the one module-level instance. */
let sharedRecorder: PostgresMetricsRecorder | undefined;

/**
 * The recorder the environment asks for: `IDEMPOTENCY_METRICS=database` gives one shared
 * {@link PostgresMetricsRecorder} per isolate; unset or anything else, none.
 *
 * @returns The shared recorder, or `undefined`.
 * @example Use the environment's choice
 * ```ts
 * const recorder = metricsRecorderFromEnv();
 * ```
 */
export function metricsRecorderFromEnv(): PostgresMetricsRecorder | undefined {
  if (readEnv("IDEMPOTENCY_METRICS") !== "database") return undefined;
  sharedRecorder ??= new PostgresMetricsRecorder();
  return sharedRecorder;
}

/**
 * Flushes and closes the shared recorder, if one was opened.
 *
 * @returns When it is closed.
 * @example On shutdown
 * ```ts
 * await closeSharedMetricsRecorder();
 * ```
 */
export async function closeSharedMetricsRecorder(): Promise<void> {
  const recorder = sharedRecorder;
  sharedRecorder = undefined;
  await recorder?.close();
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
