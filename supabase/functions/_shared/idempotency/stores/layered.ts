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
// deno-lint-ignore no-import-prefix -- functions pin npm packages by full specifier (deploy convention)
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
import { bodyEncoding } from "../_begin_rules.ts";
import { within } from "../_within.ts";

/**
 * What the front knows about a scope: the back's record id, and the claim or the committed response.
 *
 * @example An in-flight marker
 * ```ts
 * import type { FrontEntry } from "./layered.ts";
 *
 * const entry: FrontEntry = { state: "in_flight", recordId: "r1", fingerprint: "f", until: Date.now() + 30_000 };
 * console.assert(entry.state === "in_flight");
 * ```
 */
export type FrontEntry =
  | { state: "in_flight"; recordId: string; fingerprint: string; until: number }
  | {
    state: "completed";
    recordId: string;
    fingerprint: string;
    response: StoredResponse;
    replayCount: number;
  };

/**
 * The front's contract: a cache with per-entry expiry. Every call may reject; the store then skips it.
 *
 * @example A front that knows nothing (every claim goes to the back)
 * ```ts
 * import type { FrontCache } from "./layered.ts";
 *
 * const empty: FrontCache = {
 *   lookup: () => Promise.resolve(null),
 *   set: () => Promise.resolve(),
 *   delete: () => Promise.resolve(),
 *   close: () => Promise.resolve(),
 * };
 * console.assert((await empty.lookup("id", "fp")) === null);
 * ```
 */
export interface FrontCache {
  /**
   * The entry of `id`, or `null`. A completed entry whose fingerprint is `fingerprint` counts one replay,
   * atomically, and comes back with the new count; `""` matches no fingerprint, so it only reads.
   * @param id The scope's cache id.
   * @param fingerprint The asking request's fingerprint.
   * @returns The entry, or `null`.
   */
  lookup(id: string, fingerprint: string): Promise<FrontEntry | null>;
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

/**
 * Options of {@link RedisFrontCache}.
 *
 * @example A front that gives up on Redis after 100 ms
 * ```ts
 * import { RedisFrontCache, type RedisFrontCacheOptions } from "./layered.ts";
 *
 * const options: RedisFrontCacheOptions = { url: "redis://127.0.0.1:54380", timeoutMs: 100 };
 * const front = new RedisFrontCache(options);
 * await front.close();
 * ```
 */
export interface RedisFrontCacheOptions {
  /**
   * Where Redis is.
   * @default {Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379"}
   */
  url?: string;
  /**
   * Prefix of every cache key.
   * @default {"idem-front:"}
   */
  prefix?: string;
  /**
   * How long one call may take before the store skips the front, in milliseconds.
   * @default {250}
   */
  timeoutMs?: number;
  /**
   * After a failed connect, how long the front is skipped before the next attempt, in milliseconds.
   * @default {1000}
   */
  retryMs?: number;
}

/** The node-redis client this cache opens. */
type Client = ReturnType<typeof createClient>;

/** A Lua script and its SHA-1, for EVALSHA. */
interface Script {
  source: string;
  sha1: string;
}

function script(source: string): Script {
  return { source, sha1: createHash("sha1").update(source).digest("hex") };
}

/**
 * KEYS[1] entry; ARGV fingerprint. The hash as a flat list, `replays` raised first when it is a completed
 * entry of the same request: one round trip, and a replay is counted exactly when it is served.
 */
const LOOKUP = script(`
local h = redis.call('HMGET', KEYS[1], 'state', 'fingerprint')
if h[1] == 'completed' and h[2] == ARGV[1] then redis.call('HINCRBY', KEYS[1], 'replays', 1) end
return redis.call('HGETALL', KEYS[1])
`);

/** KEYS[1] entry; ARGV ttl ms, then field, value, field, value... */
const SET = script(`
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`);

/**
 * A {@link FrontCache} on Redis: one hash per scope (body in base64) with `PEXPIRE`; each call is one script
 * (EVALSHA, with EVAL when Redis has not cached it yet, as after a restart or a flush). Fails fast:
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

  /**
   * Connects lazily, on the first call.
   *
   * @param options Where Redis is and how long to wait for it.
   */
  constructor(options: RedisFrontCacheOptions = {}) {
    this.#url = options.url ?? readEnv("REDIS_URL") ?? "redis://127.0.0.1:6379";
    this.#prefix = options.prefix ?? "idem-front:";
    this.#timeoutMs = options.timeoutMs ?? 250;
    this.#retryMs = options.retryMs ?? 1000;
  }

  /**
   * One script.
   *
   * @param id The scope's cache id.
   * @param fingerprint The asking request's fingerprint (`""` only reads).
   * @returns The entry, or `null`.
   */
  async lookup(id: string, fingerprint: string): Promise<FrontEntry | null> {
    const client = await this.#ready();
    const reply = await within(
      evalScript(client, LOOKUP, this.#prefix + id, [fingerprint]),
      this.#timeoutMs,
      `redis front: no reply within ${this.#timeoutMs} ms`,
    );
    const list = (reply ?? []) as unknown[];
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < list.length; i += 2) fields[String(list[i])] = String(list[i + 1]);
    return decodeEntry(fields);
  }

  /**
   * One script: DEL, HSET and PEXPIRE, atomically and without a MULTI round of replies.
   *
   * @param id The scope's cache id.
   * @param entry What to remember.
   * @param ttlMs How long, in milliseconds.
   */
  async set(id: string, entry: FrontEntry, ttlMs: number): Promise<void> {
    const client = await this.#ready();
    const fields = Object.entries(encodeEntry(entry)).flat();
    const args = [String(Math.max(1, Math.floor(ttlMs))), ...fields];
    await within(
      evalScript(client, SET, this.#prefix + id, args),
      this.#timeoutMs,
      `redis front: no reply within ${this.#timeoutMs} ms`,
    );
  }

  /**
   * One DEL.
   *
   * @param id The scope's cache id.
   */
  async delete(id: string): Promise<void> {
    const client = await this.#ready();
    await within(
      client.del(this.#prefix + id),
      this.#timeoutMs,
      `redis front: no reply within ${this.#timeoutMs} ms`,
    );
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
      await within(
        client.connect(),
        this.#timeoutMs * 4,
        `redis front: no reply within ${this.#timeoutMs * 4} ms`,
      );
      this.#client = client;
      return client;
    } catch (error) {
      if (client.isOpen) client.destroy();
      this.#nextAttempt = Date.now() + this.#retryMs;
      throw error;
    }
  }
}

/**
 * Options of {@link LayeredStore}.
 *
 * @example Keep replays in the front for ten minutes at most
 * ```ts
 * import type { LayeredStoreOptions } from "./layered.ts";
 * import { MemoryStore } from "./memory.ts";
 * import { RedisFrontCache } from "./layered.ts";
 *
 * const options: LayeredStoreOptions = {
 *   back: new MemoryStore(),
 *   front: new RedisFrontCache({ url: "redis://127.0.0.1:54380" }),
 *   maxFrontTtlSeconds: 600,
 * };
 * console.assert(options.maxFrontTtlSeconds === 600);
 * ```
 */
export interface LayeredStoreOptions {
  /** The record of truth (a `PostgresStore`). */
  back: IdempotencyStore;
  /** The fast front (a {@link RedisFrontCache}). */
  front: FrontCache;
  /**
   * The longest a completed response stays in the front, in seconds (never longer than the key's TTL).
   *
   * @default {3600}
   */
  maxFrontTtlSeconds?: number;
}

/** What this instance remembers of a claim it holds, to update the front when it ends. */
interface HeldClaim {
  id: string;
  leaseToken: string;
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
  /** Front writes under way, awaited by `close()`. */
  readonly #writes = new Set<Promise<void>>();

  /**
   * Layers `front` over `back`; opens nothing.
   *
   * @param options The back, the front, and the front's longest TTL.
   */
  constructor(options: LayeredStoreOptions) {
    this.#back = options.back;
    this.#front = options.front;
    this.#maxFrontTtlMs = (options.maxFrontTtlSeconds ?? 3600) * 1000;
  }

  /**
   * The front first: a completed entry with the same fingerprint is a replay, a live in-flight marker an
   * `in_progress`. Anything else (nothing cached, another fingerprint, the front down) asks the back, whose
   * answer is then cached.
   *
   * @param input The key, its scope and request fingerprint, and the durations.
   * @returns The outcome the begin rules give (a front answer is only ever a replay or in-flight).
   * @throws When the back cannot be reached (a front failure is skipped, never thrown).
   */
  async begin(input: BeginInput): Promise<BeginResult> {
    const id = frontId(input);
    const cached = await this.#tryFront(() => this.#front.lookup(id, input.fingerprint));
    const fromFront = cached ? frontAnswer(cached, input.fingerprint) : null;
    if (fromFront) {
      this.frontHits++;
      return fromFront;
    }
    const result = await this.#back.begin(input);
    const { fingerprint } = input;
    const { recordId } = result;
    switch (result.outcome) {
      case "started": {
        const ttlMs = Math.min(input.ttlSeconds * 1000, this.#maxFrontTtlMs);
        this.#held.set(recordId, { id, leaseToken: result.leaseToken, fingerprint, ttlMs });
        this.#setFront(id, inFlight(recordId, fingerprint, input.lockTimeoutSeconds));
        break;
      }
      case "replay": {
        const { response, replayCount } = result;
        const ttlMs = Math.min(input.ttlSeconds * 1000, this.#maxFrontTtlMs);
        this.#setFront(id, { state: "completed", recordId, fingerprint, response, replayCount }, ttlMs);
        break;
      }
      case "in_progress":
        this.#setFront(id, inFlight(recordId, fingerprint, result.retryAfterSeconds));
        break;
    }
    return result;
  }

  /**
   * Stores in the back; only once that committed, caches the response in the front.
   *
   * @param lease The lease `begin` returned.
   * @param response The response to store.
   * @returns `false` when the lease is no longer the caller's (nothing stored).
   */
  async complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    const ok = await this.#back.complete(lease, response);
    const held = ok ? this.#release(lease) : undefined;
    if (held) {
      const { recordId } = lease;
      const entry: FrontEntry = {
        state: "completed",
        recordId,
        fingerprint: held.fingerprint,
        response,
        replayCount: 0,
      };
      this.#setFront(held.id, entry, held.ttlMs);
    }
    return ok;
  }

  /**
   * Releases in the back, then drops the front's in-flight marker so a retry reaches the back at once.
   *
   * @param lease The lease `begin` returned.
   * @param error What went wrong, for the record.
   * @returns `false` when the lease is no longer the caller's.
   */
  async fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    const ok = await this.#back.fail(lease, error);
    const held = ok ? this.#release(lease) : undefined;
    if (held) this.#inBackground(() => this.#front.delete(held.id));
    return ok;
  }

  /**
   * Renews in the back, then the front's marker.
   *
   * @param lease The lease `begin` returned.
   * @param lockTimeoutSeconds The new lease length.
   * @returns `false` when the lease is no longer the caller's.
   */
  async extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    const ok = await this.#back.extendLease(lease, lockTimeoutSeconds);
    const held = this.#held.get(lease.recordId);
    if (ok && held?.leaseToken === lease.leaseToken) {
      this.#setFront(held.id, inFlight(lease.recordId, held.fingerprint, lockTimeoutSeconds));
    }
    return ok;
  }

  /**
   * The back's status, with the replays the front served counted in: the back never saw those. (With
   * several instances the figure is the larger of the two counts, not their exact sum.)
   *
   * @param scope The key and its user.
   * @returns The key's status, or `null` when there is none.
   */
  async status(scope: KeyScope): Promise<KeyStatus | null> {
    const status = await this.#back.status(scope);
    if (status?.status !== "completed") return status;
    // an empty fingerprint matches no entry, so this lookup counts no replay
    const cached = await this.#tryFront(() => this.#front.lookup(frontId(scope), ""));
    const served = cached?.state === "completed" ? cached.replayCount : 0;
    return { ...status, replayCount: Math.max(status.replayCount, served) };
  }

  /**
   * The back's cleanup (front entries expire by themselves).
   *
   * @param options The batch size.
   * @returns How many records were deleted.
   */
  cleanup(options?: { batchSize?: number }): Promise<number> {
    return this.#back.cleanup(options);
  }

  /** Closes both. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#writes]);
    await Promise.allSettled([this.#front.close(), this.#back.close()]);
  }

  /** Forgets the claim `lease` holds here, only with its own token: a stale lease must not touch it. */
  #release(lease: Lease): HeldClaim | undefined {
    const held = this.#held.get(lease.recordId);
    if (held?.leaseToken !== lease.leaseToken) return undefined;
    this.#held.delete(lease.recordId);
    return held;
  }

  /** Writes an entry for `ttlMs` (an in-flight marker: until its lease ends), in the background. */
  #setFront(id: string, entry: FrontEntry, ttlMs?: number): void {
    const ms = ttlMs ?? (entry.state === "in_flight" ? entry.until - Date.now() : 1);
    this.#inBackground(() => this.#front.set(id, entry, ms));
  }

  /**
   * A front write the caller does not wait for: the back has already decided, so the write only warms the
   * cache. Writes go out in order on the front's one connection, so a later lookup by this instance sees
   * them; `close()` waits for those still under way.
   */
  #inBackground(call: () => Promise<void>): void {
    const write = this.#tryFront(call).then(() => {
      this.#writes.delete(write);
    });
    this.#writes.add(write);
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

/** An in-flight marker that ends with the lease, `seconds` from now. */
function inFlight(recordId: string, fingerprint: string, seconds: number): FrontEntry {
  return { state: "in_flight", recordId, fingerprint, until: Date.now() + seconds * 1000 };
}

/** The front's answer for `fingerprint`, or `null` when the back must decide. */
function frontAnswer(entry: FrontEntry, fingerprint: string): BeginResult | null {
  if (entry.fingerprint !== fingerprint) return null;
  const { recordId } = entry;
  if (entry.state === "completed") {
    return { outcome: "replay", recordId, response: copy(entry.response), replayCount: entry.replayCount };
  }
  const left = entry.until - Date.now();
  if (left <= 0) return null;
  return { outcome: "in_progress", recordId, retryAfterSeconds: Math.max(1, Math.ceil(left / 1000)) };
}

/** The cache id of a scope: a hash, so no user id or key can collide with another's or break the key name. */
function frontId(scope: KeyScope): string {
  return createHash("sha256").update(JSON.stringify([scope.userId, scope.key])).digest("hex");
}

function copy(response: StoredResponse): StoredResponse {
  return { ...response, headers: { ...response.headers }, body: response.body.slice() };
}

/** The entry as hash fields (the body in base64: Redis replies are read back as UTF-8 strings). */
function encodeEntry(entry: FrontEntry): Record<string, string> {
  const common = { state: entry.state, record: entry.recordId, fingerprint: entry.fingerprint };
  if (entry.state === "in_flight") return { ...common, until: String(entry.until) };
  const { response } = entry;
  return {
    ...common,
    status: String(response.status),
    headers: JSON.stringify(response.headers),
    encoding: response.encoding,
    body: Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength).toString(
      "base64",
    ),
    replays: String(entry.replayCount),
  };
}

function decodeEntry(fields: Record<string, string>): FrontEntry | null {
  const recordId = fields.record ?? "";
  const fingerprint = fields.fingerprint ?? "";
  if (fields.state === "in_flight") {
    return { state: "in_flight", recordId, fingerprint, until: Number(fields.until) };
  }
  if (fields.state !== "completed") return null;
  return {
    state: "completed",
    recordId,
    fingerprint,
    replayCount: Number(fields.replays ?? 0),
    response: {
      status: Number(fields.status),
      headers: JSON.parse(fields.headers ?? "{}") as Record<string, string>,
      encoding: bodyEncoding(fields.encoding),
      body: new Uint8Array(Buffer.from(fields.body ?? "", "base64")),
    },
  };
}

/** EVALSHA, and EVAL once when Redis does not have the script (after a restart, SCRIPT FLUSH or FLUSHALL). */
async function evalScript(client: Client, script: Script, key: string, args: string[]): Promise<unknown> {
  const options = { keys: [key], arguments: args };
  try {
    return await client.evalSha(script.sha1, options);
  } catch (error) {
    if (!(error instanceof Error && error.message.startsWith("NOSCRIPT"))) throw error;
    return await client.eval(script.source, options);
  }
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
