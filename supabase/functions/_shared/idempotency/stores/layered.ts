/**
 * A layered store: a fast front (Redis) answers replays and in-flight checks; the back (Postgres) stays the
 * record of truth for every claim.
 *
 * The front only ever answers "replay" (with a response the back has already committed) or "in progress";
 * it never grants a claim. Every `started` comes from the back's atomic `begin`, so exactly-once holds
 * whatever happens to the front: Redis lost, flushed or restarted mid-burst only makes requests slower,
 * because they go to the database. A front that fails or times out is skipped (counted in `frontErrors`);
 * a back that fails makes the call fail, and the middleware's `onStoreError` decides (fail-closed by
 * default; fail-open only when chosen).
 *
 * What the front does not see: a replay it answers does not raise the back's `replay_count`, and an
 * operator's purge in the database is replayed from the front until the cached entry's TTL ends.
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { createClient } from "npm:redis@5.10.0";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "../store.ts";

/** What the front knows about a scope. */
export type FrontEntry =
  | { state: "in_flight"; fingerprint: string; until: number }
  | { state: "completed"; fingerprint: string; response: StoredResponse };

/** The front's contract: a cache with per-entry expiry. Every call may reject; the store then skips it. */
export interface FrontCache {
  /**
   * The entry of `id`, or `null`.
   * @param id The scope's cache id.
   */
  get(id: string): Promise<FrontEntry | null>;
  /**
   * Sets the entry of `id` for `ttlMs`.
   * @param id The scope's cache id.
   * @param entry What to remember.
   * @param ttlMs How long.
   */
  set(id: string, entry: FrontEntry, ttlMs: number): Promise<void>;
  /**
   * Forgets `id`.
   * @param id The scope's cache id.
   */
  delete(id: string): Promise<void>;
  /** Releases the connection. */
  close(): Promise<void>;
}

/** Options of {@link RedisFrontCache}. */
export interface RedisFrontCacheOptions {
  /**
   * Where Redis is.
   * @default `REDIS_URL` from the environment, else `redis://127.0.0.1:6379`
   */
  url?: string;
  /**
   * Prefix of every cache key.
   * @default "idem-front:"
   */
  prefix?: string;
  /**
   * How long one call may take before the store skips the front, in milliseconds.
   * @default 250
   */
  timeoutMs?: number;
  /**
   * After a failed connect, how long the front is skipped before the next attempt, in milliseconds.
   * @default 1000
   */
  retryMs?: number;
}

/** The node-redis client this cache opens. */
type Client = ReturnType<typeof createClient>;

/**
 * A {@link FrontCache} on Redis: one string per scope (JSON, body in base64) with `PX` expiry. Fails fast:
 * no offline queue, a timeout on every call, and while Redis is down one connect attempt per `retryMs`.
 *
 * @example A front on the local Redis
 * ```ts
 * const front = new RedisFrontCache({ url: "redis://127.0.0.1:54380" });
 * ```
 */
export class RedisFrontCache implements FrontCache {
  readonly #url: string;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #retryMs: number;
  #client: Client | undefined;
  #connecting: Promise<Client> | undefined;
  #nextAttempt = 0;
  #closed = false;

  /** @param options Where Redis is and how long to wait for it. */
  constructor(options: RedisFrontCacheOptions = {}) {
    this.#url = options.url ?? readEnv("REDIS_URL") ?? "redis://127.0.0.1:6379";
    this.#prefix = options.prefix ?? "idem-front:";
    this.#timeoutMs = options.timeoutMs ?? 250;
    this.#retryMs = options.retryMs ?? 1000;
  }

  /** One GET. */
  async get(id: string): Promise<FrontEntry | null> {
    const client = await this.#ready();
    const raw = await within(client.get(this.#prefix + id), this.#timeoutMs);
    return raw === null ? null : decodeEntry(String(raw));
  }

  /** One SET with PX. */
  async set(id: string, entry: FrontEntry, ttlMs: number): Promise<void> {
    const client = await this.#ready();
    await within(
      client.set(this.#prefix + id, encodeEntry(entry), { PX: Math.max(1, Math.floor(ttlMs)) }),
      this.#timeoutMs,
    );
  }

  /** One DEL. */
  async delete(id: string): Promise<void> {
    const client = await this.#ready();
    await within(client.del(this.#prefix + id), this.#timeoutMs);
  }

  /** Closes the connection, if open. */
  async close(): Promise<void> {
    this.#closed = true;
    const client = await this.#connecting?.catch(() => undefined) ?? this.#client;
    this.#client = undefined;
    if (client?.isOpen) await client.close().catch(() => client.destroy());
  }

  async #ready(): Promise<Client> {
    if (this.#closed) throw new Error("the front cache is closed");
    if (this.#client?.isReady) return this.#client;
    if (this.#connecting) return await this.#connecting;
    if (Date.now() < this.#nextAttempt) throw new Error("redis front: skipped after a failed connect");
    this.#connecting = this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return await this.#connecting;
  }

  async #connect(): Promise<Client> {
    if (this.#client?.isOpen) this.#client.destroy();
    const client = createClient({
      url: this.#url,
      disableOfflineQueue: true,
      socket: { connectTimeout: this.#timeoutMs * 4, reconnectStrategy: false },
    });
    // socket errors also reject the pending call; without a listener they would crash the process
    client.on("error", () => {});
    try {
      await within(client.connect(), this.#timeoutMs * 4);
      this.#client = client;
      return client;
    } catch (error) {
      if (client.isOpen) client.destroy();
      this.#nextAttempt = Date.now() + this.#retryMs;
      throw error;
    }
  }
}

/** Options of {@link LayeredStore}. */
export interface LayeredStoreOptions {
  /** The record of truth (a `PostgresStore`). */
  back: IdempotencyStore;
  /** The fast front (a {@link RedisFrontCache}). */
  front: FrontCache;
  /**
   * The longest a completed response stays in the front, in seconds (never longer than the key's TTL).
   * @default 3600
   */
  maxFrontTtlSeconds?: number;
}

/** What this instance remembers of a claim it holds, to update the front when it ends. */
interface HeldClaim {
  id: string;
  fingerprint: string;
  ttlMs: number;
}

/**
 * An {@link IdempotencyStore} with a {@link FrontCache} in front of another store.
 *
 * @example Redis in front of Postgres
 * ```ts
 * import { PostgresStore } from "./postgres.ts";
 * const store = new LayeredStore({ back: new PostgresStore(), front: new RedisFrontCache() });
 * ```
 */
export class LayeredStore implements IdempotencyStore {
  /** Always `layered`. */
  readonly name = "layered";
  /** Claims answered by the front (replays and in-flight checks) without a round trip to the back. */
  frontHits = 0;
  /** Front calls that failed or timed out and were skipped. */
  frontErrors = 0;
  readonly #back: IdempotencyStore;
  readonly #front: FrontCache;
  readonly #maxFrontTtlMs: number;
  /** Claims this instance holds, by record id; removed when they are completed or failed. */
  readonly #held = new Map<string, HeldClaim>();

  /** @param options The back, the front, and the front's longest TTL. */
  constructor(options: LayeredStoreOptions) {
    this.#back = options.back;
    this.#front = options.front;
    this.#maxFrontTtlMs = (options.maxFrontTtlSeconds ?? 3600) * 1000;
  }

  /**
   * The front first: a completed entry with the same fingerprint is a replay, a live in-flight marker an
   * `in_progress`. Anything else (nothing cached, another fingerprint, the front down) asks the back, whose
   * answer is then cached.
   */
  async begin(input: BeginInput): Promise<BeginResult> {
    const id = frontId(input);
    const cached = await this.#tryFront(() => this.#front.get(id));
    const fromFront = cached ? frontAnswer(cached, input.fingerprint) : null;
    if (fromFront) {
      this.frontHits++;
      return fromFront;
    }
    const result = await this.#back.begin(input);
    const ttlMs = Math.min(input.ttlSeconds * 1000, this.#maxFrontTtlMs);
    switch (result.outcome) {
      case "started":
        this.#held.set(result.recordId, { id, fingerprint: input.fingerprint, ttlMs });
        await this.#tryFront(() =>
          this.#front.set(id, {
            state: "in_flight",
            fingerprint: input.fingerprint,
            until: Date.now() + input.lockTimeoutSeconds * 1000,
          }, input.lockTimeoutSeconds * 1000)
        );
        break;
      case "replay":
        await this.#tryFront(() =>
          this.#front.set(id, {
            state: "completed",
            fingerprint: input.fingerprint,
            response: result.response,
          }, ttlMs)
        );
        break;
      case "in_progress":
        await this.#tryFront(() =>
          this.#front.set(id, {
            state: "in_flight",
            fingerprint: input.fingerprint,
            until: Date.now() + result.retryAfterSeconds * 1000,
          }, result.retryAfterSeconds * 1000)
        );
        break;
    }
    return result;
  }

  /** Stores in the back; only once that committed, caches the response in the front. */
  async complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    const ok = await this.#back.complete(lease, response);
    const held = this.#held.get(lease.recordId);
    this.#held.delete(lease.recordId);
    if (ok && held) {
      await this.#tryFront(() =>
        this.#front.set(held.id, { state: "completed", fingerprint: held.fingerprint, response }, held.ttlMs)
      );
    }
    return ok;
  }

  /** Releases in the back, then drops the front's in-flight marker so a retry reaches the back at once. */
  async fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    const ok = await this.#back.fail(lease, error);
    const held = this.#held.get(lease.recordId);
    this.#held.delete(lease.recordId);
    if (held) await this.#tryFront(() => this.#front.delete(held.id));
    return ok;
  }

  /** Renews in the back, then the front's marker. */
  async extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    const ok = await this.#back.extendLease(lease, lockTimeoutSeconds);
    const held = this.#held.get(lease.recordId);
    if (ok && held) {
      const ms = lockTimeoutSeconds * 1000;
      await this.#tryFront(() =>
        this.#front.set(held.id, {
          state: "in_flight",
          fingerprint: held.fingerprint,
          until: Date.now() + ms,
        }, ms)
      );
    }
    return ok;
  }

  /** The back's status: the front holds no record of truth. */
  status(scope: KeyScope): Promise<KeyStatus | null> {
    return this.#back.status(scope);
  }

  /** The back's cleanup (front entries expire by themselves). */
  cleanup(options?: { batchSize?: number }): Promise<number> {
    return this.#back.cleanup(options);
  }

  /** Closes both. */
  async close(): Promise<void> {
    await Promise.allSettled([this.#front.close(), this.#back.close()]);
  }

  /** A front call whose failure is counted and skipped. */
  async #tryFront<T>(call: () => Promise<T>): Promise<T | undefined> {
    try {
      return await call();
    } catch {
      this.frontErrors++;
      return undefined;
    }
  }
}

/** The front's answer for `fingerprint`, or `null` when the back must decide. */
function frontAnswer(entry: FrontEntry, fingerprint: string): BeginResult | null {
  if (entry.fingerprint !== fingerprint) return null;
  if (entry.state === "completed") {
    return { outcome: "replay", recordId: "front", response: copy(entry.response), replayCount: 0 };
  }
  const left = entry.until - Date.now();
  if (left <= 0) return null;
  return {
    outcome: "in_progress",
    recordId: "front",
    retryAfterSeconds: Math.max(1, Math.ceil(left / 1000)),
  };
}

/** The cache id of a scope: a hash, so no user id or key can collide with another's or break the key name. */
function frontId(scope: KeyScope): string {
  return createHash("sha256").update(JSON.stringify([scope.userId, scope.key])).digest("hex");
}

function copy(response: StoredResponse): StoredResponse {
  return { ...response, headers: { ...response.headers }, body: response.body.slice() };
}

function encodeEntry(entry: FrontEntry): string {
  if (entry.state === "in_flight") return JSON.stringify(entry);
  const { response } = entry;
  return JSON.stringify({
    state: "completed",
    fingerprint: entry.fingerprint,
    status: response.status,
    headers: response.headers,
    encoding: response.encoding,
    body: Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength).toString(
      "base64",
    ),
  });
}

function decodeEntry(raw: string): FrontEntry | null {
  const value = JSON.parse(raw) as Record<string, unknown>;
  if (value.state === "in_flight") {
    return { state: "in_flight", fingerprint: String(value.fingerprint), until: Number(value.until) };
  }
  if (value.state !== "completed") return null;
  return {
    state: "completed",
    fingerprint: String(value.fingerprint),
    response: {
      status: Number(value.status),
      headers: (value.headers ?? {}) as Record<string, string>,
      encoding: value.encoding === "gzip" ? "gzip" : "identity",
      body: new Uint8Array(Buffer.from(String(value.body ?? ""), "base64")),
    },
  };
}

/** `promise`, or a rejection after `ms`; the timer never outlives the call. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`redis front: no reply within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
