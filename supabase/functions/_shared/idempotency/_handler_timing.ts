/**
 * How long one wrapped function's handler takes, and which of its runs are under way in this isolate: a
 * duplicate told "in progress" learns when to come back (near the first's expected finish, not the end of
 * its lease), and a duplicate that waits in the same isolate is woken the moment the first finishes.
 */

/** Recent durations kept: enough for a stable high percentile, little enough to follow a change. */
const SAMPLES = 32;
/** The shortest hint: below this a retry only finds the first still running. */
const MIN_HINT_MS = 10;
/** The hint before any run finished here: a second, as `Retry-After: 1` said before. */
const DEFAULT_HINT_MS = 1000;

/** Durations of recent handler runs, and the runs under way, of one wrapped function in one isolate. */
export class HandlerTiming {
  readonly #samples: number[] = [];
  #next = 0;
  /** Runs under way here; the promise is made only when a waiter asks for it (most runs have none). */
  readonly #running = new Map<string, { settled?: Promise<void>; resolve?: () => void }>();

  /**
   * Marks the run of `recordId` as started; the returned function marks it finished, records its duration
   * and wakes whoever waits for it.
   *
   * @param recordId The record the run holds (from `begin`).
   * @returns The function to call once the outcome is stored or released.
   */
  start(recordId: string): () => void {
    const startedAt = performance.now();
    const run: { settled?: Promise<void>; resolve?: () => void } = {};
    this.#running.set(recordId, run);
    return () => {
      this.#record(performance.now() - startedAt);
      if (this.#running.get(recordId) === run) this.#running.delete(recordId);
      run.resolve?.();
    };
  }

  /**
   * Settles when the run of `recordId` in this isolate finishes.
   *
   * @param recordId The record an in-progress `begin` named.
   * @returns The promise, or `undefined` when no run of it is under way here.
   */
  settled(recordId: string): Promise<void> | undefined {
    const run = this.#running.get(recordId);
    if (run === undefined) return undefined;
    run.settled ??= new Promise<void>((resolve) => (run.resolve = resolve));
    return run.settled;
  }

  /**
   * Milliseconds until a run that is under way should finish: the 90th percentile of recent durations
   * (a duplicate arrives at any point of the first's run, so the full duration bounds what is left), at
   * least 10 ms, at most `leaseMs`; a second (or `leaseMs`) before any run finished.
   *
   * @param leaseMs What is left of the first request's lease (or of the wait), in milliseconds.
   * @returns The hint in whole milliseconds.
   */
  expectedMs(leaseMs: number): number {
    if (this.#samples.length === 0) return Math.min(DEFAULT_HINT_MS, leaseMs);
    const sorted = [...this.#samples].sort((a, b) => a - b);
    const p90 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))] ?? DEFAULT_HINT_MS;
    return Math.max(MIN_HINT_MS, Math.min(Math.ceil(p90), leaseMs));
  }

  #record(ms: number): void {
    this.#samples[this.#next] = ms;
    this.#next = (this.#next + 1) % SAMPLES;
  }
}
