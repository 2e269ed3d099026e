/**
 * A Redis store through node-redis (`npm:redis`), for projects that keep hot state out of Postgres.
 *
 * Each state change is one Lua script, which Redis runs atomically, so concurrent duplicates from any number
 * of processes are decided inside Redis. The scripts read the clock with Redis `TIME`, so leases and expiry
 * do not depend on the callers' clocks agreeing.
 */

import { Buffer } from "node:buffer";
import { createClient } from "npm:redis@5.10.0";
import { checkDurations, MAX_ERROR_MESSAGE, storedResponse, toBeginResult } from "../_begin_rules.ts";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "../store.ts";
import { within } from "../_within.ts";

/**
 * Arguments of EVAL / EVALSHA in node-redis.
 *
 * @example The arguments of one script call
 * ```ts
 * import type { RedisScriptOptions } from "./redis.ts";
 *
 * const options: RedisScriptOptions = { keys: ["idem:s:k-1"], arguments: ["token"] };
 * console.assert(options.keys.length === 1);
 * ```
 */
export interface RedisScriptOptions {
  /** The record key (scripts touch only declared keys, which Redis Cluster requires). */
  keys: string[];
  /** Script arguments, as strings. */
  arguments: string[];
}

/**
 * The node-redis calls this store makes; a client from `createClient()` fits.
 *
 * @example Pass a client of your own
 * ```ts
 * import { createClient } from "npm:redis@5.10.0";
 * import { type RedisScriptClient, RedisStore } from "./redis.ts";
 *
 * const client = createClient({ url: "redis://127.0.0.1:6379" });
 * // connect it before the first call: the store never connects or closes a client it was given
 * const store = new RedisStore({ client: client as unknown as RedisScriptClient });
 * console.assert(store.name === "redis");
 * ```
 */
export interface RedisScriptClient {
  /**
   * Runs a Lua script by its source.
   *
   * @param script The Lua source.
   * @param options Its keys and arguments.
   * @returns The script's reply.
   */
  eval(script: string, options: RedisScriptOptions): Promise<unknown>;
  /**
   * Runs a Lua script Redis has cached.
   *
   * @param sha1 The script's SHA-1.
   * @param options Its keys and arguments.
   * @returns The script's reply; rejects with `NOSCRIPT` when Redis has not cached it.
   */
  evalSha(sha1: string, options: RedisScriptOptions): Promise<unknown>;
  /**
   * Reads fields of a hash.
   *
   * @param key The hash.
   * @param fields The fields read.
   * @returns Their values, `null` for a missing one.
   */
  hmGet(key: string, fields: string[]): Promise<unknown>;
}

/**
 * Options for {@link RedisStore}.
 *
 * @example Several apps on one Redis
 * ```ts
 * import { RedisStore } from "./redis.ts";
 *
 * const store = new RedisStore({ url: "redis://127.0.0.1:6379", prefix: "billing:" }); // connects on first use
 * await store.close();
 * ```
 */
export interface RedisStoreOptions {
  /**
   * Where Redis is; default `Deno.env` `REDIS_URL`, else `redis://127.0.0.1:6379`.
   *
   * @default {Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379"}
   */
  url?: string;
  /**
   * Put before every record key, so several apps can share one Redis; default `idem:`.
   *
   * @default {"idem:"}
   */
  prefix?: string;
  /**
   * A connected client you already have; the store never connects or closes it. `url` is then unused.
   *
   * @default {undefined} a client of its own, opened from `url`
   */
  client?: RedisScriptClient;
  /**
   * How long connecting may take, handshake included, in seconds; default 5. node-redis's own
   * `connectTimeout` covers only the TCP connect, so a server that accepts and then stays silent would hang.
   *
   * @default {5}
   */
  connectTimeoutSeconds?: number;
  /**
   * How long one call waits for its reply, in seconds; default 5. Then it rejects, as a store error.
   *
   * @default {5}
   */
  commandTimeoutSeconds?: number;
}

/** A Lua script with its SHA-1, for EVALSHA. */
interface Script {
  source: string;
  sha1: Promise<string>;
}

/** The client this store opened itself, which it connects on first use and closes in `close()`. */
type OwnedClient = ReturnType<typeof createClient>;

/**
 * Shared by every script: the Redis clock in ms, numbers written without exponent notation, and the key's
 * own expiry. Redis deletes the hash at its PEXPIREAT, so that must never come before the end of a live
 * lease: while a worker runs, the key lives until max(expires_at, locked_until); once finished, until
 * expires_at (at once, when that has passed).
 */
const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function ms(n) return string.format('%.0f', n) end
local function expire_at(key, expires_at, locked_until)
  redis.call('PEXPIREAT', key, ms(math.max(expires_at, locked_until or 0)))
end
`;

/** The guard of complete, fail and extend: only the current lease token of a processing record counts. */
const LEASE_GUARD = `
local current = redis.call('HMGET', KEYS[1], 'status', 'lease_token')
if current[1] ~= 'processing' or current[2] ~= ARGV[1] then return 0 end
`;

/**
 * KEYS[1] record; ARGV fingerprint, function name, ttl ms, lock ms, new lease token.
 * The begin rules (docs/guide.md, "The begin rules"; names in _begin_rules.ts), decided as
 * `idempotency_begin` decides them: a record is expired only when it is past expires_at and no worker holds a
 * live lease on it, so expiry never pre-empts running work. (Rule invalid-durations is checked before the call.)
 */
const BEGIN = `${PRELUDE}
local key = KEYS[1]
local fingerprint, fn, ttl_ms, lock_ms, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local r = redis.call('HMGET', key, 'status', 'fingerprint', 'locked_until', 'expires_at', 'attempt_count')
local status, fp, locked_until, expires_at, attempts = r[1], r[2], tonumber(r[3]), tonumber(r[4]), tonumber(r[5])

local function start(attempt, expires)
  redis.call('HSET', key, 'status', 'processing', 'fingerprint', fingerprint, 'function_name', fn,
    'lease_token', token, 'locked_until', ms(now + lock_ms), 'attempt_count', attempt,
    'started_at', ms(now), 'expires_at', ms(expires))
  redis.call('HDEL', key, 'status_code', 'headers', 'body', 'encoding', 'error_message', 'completed_at')
  expire_at(key, expires, now + lock_ms)
  return {'started', token, attempt}
end

local live_lease = status == 'processing' and locked_until > now
-- rules new-key and expired-restart (lease-outlives-ttl: a live lease keeps the record in force)
if not status or (expires_at <= now and not live_lease) then
  redis.call('DEL', key)
  redis.call('HSET', key, 'created_at', ms(now), 'replay_count', 0)
  return start(1, now + ttl_ms)
end
-- rules retry-after-failure and takeover
if fp == fingerprint and (status == 'failed' or (status == 'processing' and locked_until <= now)) then
  return start(attempts + 1, expires_at)
end
-- rule mismatch
if fp ~= fingerprint then return {'mismatch'} end
-- rule replay
if status == 'completed' then
  local replays = redis.call('HINCRBY', key, 'replay_count', 1)
  redis.call('HSET', key, 'last_replayed_at', ms(now))
  local s = redis.call('HMGET', key, 'status_code', 'headers', 'body', 'encoding')
  return {'replay', s[1], s[2], s[3], s[4], replays}
end
-- rule in-flight
return {'in_progress', math.max(1, math.ceil((locked_until - now) / 1000))}
`;

/** KEYS[1] record; ARGV lease token, status code, headers JSON, body base64, encoding. */
const COMPLETE = `${PRELUDE}${LEASE_GUARD}
redis.call('HSET', KEYS[1], 'status', 'completed', 'status_code', ARGV[2], 'headers', ARGV[3],
  'body', ARGV[4], 'encoding', ARGV[5], 'completed_at', ms(now))
redis.call('HDEL', KEYS[1], 'lease_token', 'locked_until', 'error_message')
-- a stored response is kept at least its TTL (expires_at - created_at) from now, as idempotency_complete does
local times = redis.call('HMGET', KEYS[1], 'expires_at', 'created_at')
local expires_at = math.max(tonumber(times[1]), now + tonumber(times[1]) - tonumber(times[2]))
redis.call('HSET', KEYS[1], 'expires_at', ms(expires_at))
expire_at(KEYS[1], expires_at)
return 1
`;

/** KEYS[1] record; ARGV lease token, error message, status code or "". */
const FAIL = `${PRELUDE}${LEASE_GUARD}
redis.call('HSET', KEYS[1], 'status', 'failed', 'error_message', ARGV[2], 'completed_at', ms(now))
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'status_code')
else
  redis.call('HSET', KEYS[1], 'status_code', ARGV[3])
end
redis.call('HDEL', KEYS[1], 'lease_token', 'locked_until')
expire_at(KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'expires_at')))
return 1
`;

/** KEYS[1] record; ARGV lease token, lock ms. */
const EXTEND = `${PRELUDE}${LEASE_GUARD}
local locked_until = now + math.max(tonumber(ARGV[2]), 1000)
redis.call('HSET', KEYS[1], 'locked_until', ms(locked_until))
expire_at(KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'expires_at')), locked_until)
return 1
`;

const STATUS_FIELDS = [
  "function_name",
  "status",
  "status_code",
  "attempt_count",
  "replay_count",
  "created_at",
  "completed_at",
  "expires_at",
];

/**
 * An {@link IdempotencyStore} on Redis. A record is a hash at `prefix + "s:" + key` for the shared scope
 * (`userId` null) and at `prefix + "u:" + escapedUserId + ":" + key` for a user, and that key name is also
 * its `recordId`, so `complete` finds the hash without a second index. See {@link recordKey}.
 *
 * @example Use Redis for one function
 * ```ts
 * import { withIdempotency } from "../middleware.ts";
 * import { RedisStore } from "./redis.ts";
 *
 * const store = new RedisStore({ url: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379" });
 * const handler = withIdempotency(() => new Response("ok"), { functionName: "charge", store });
 * console.assert(typeof handler === "function");
 * await store.close();
 * ```
 */
export class RedisStore implements IdempotencyStore {
  /** Always `redis`. */
  readonly name = "redis";
  readonly #prefix: string;
  readonly #client: RedisScriptClient;
  readonly #owned: OwnedClient | undefined;
  readonly #scripts: { begin: Script; complete: Script; fail: Script; extend: Script };
  readonly #connectTimeoutMs: number;
  readonly #commandTimeoutMs: number;
  #connecting: Promise<unknown> | undefined;
  #closed = false;

  /**
   * Connects lazily, on the first call, so constructing a store in module scope costs nothing.
   *
   * @param options Where Redis is, or a connected client, and the timeouts.
   */
  constructor(options: RedisStoreOptions = {}) {
    this.#prefix = options.prefix ?? "idem:";
    this.#connectTimeoutMs = (options.connectTimeoutSeconds ?? 5) * 1000;
    this.#commandTimeoutMs = (options.commandTimeoutSeconds ?? 5) * 1000;
    if (options.client) {
      this.#client = options.client;
    } else {
      this.#owned = ownClient(options, this.#connectTimeoutMs);
      this.#client = this.#owned as unknown as RedisScriptClient;
    }
    this.#scripts = {
      begin: script(BEGIN),
      complete: script(COMPLETE),
      fail: script(FAIL),
      extend: script(EXTEND),
    };
  }

  /**
   * Claims a key in one script.
   *
   * @param input The key, its scope and request fingerprint, and the durations.
   * @returns The outcome the begin rules give.
   * @throws {RangeError} rule invalid-durations; another error when the store cannot be reached.
   */
  begin(input: BeginInput): Promise<BeginResult> {
    return this.#run("begin", async () => {
      checkDurations(input);
      const recordId = this.#recordKey(input);
      const reply = await this.#eval(this.#scripts.begin, recordId, [
        input.fingerprint,
        input.functionName,
        String(input.ttlSeconds * 1000),
        String(input.lockTimeoutSeconds * 1000),
        crypto.randomUUID(),
      ]);
      return beginResultOf(recordId, reply);
    });
  }

  /**
   * Stores the response (body as base64, since hash fields are read back as UTF-8 strings).
   *
   * @param lease What `begin` returned with `started`.
   * @param response The response to keep.
   * @returns `false` when the lease is no longer the caller's (nothing was written).
   */
  complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    if (!this.#ownsRecord(lease)) return Promise.resolve(false);
    return this.#run("complete", async () => {
      const reply = await this.#eval(this.#scripts.complete, lease.recordId, [
        lease.leaseToken,
        String(response.status),
        JSON.stringify(response.headers),
        Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength).toString(
          "base64",
        ),
        response.encoding,
      ]);
      return reply === 1;
    });
  }

  /**
   * Marks the attempt failed so a retry runs again.
   *
   * @param lease What `begin` returned with `started`.
   * @param error The failure, kept for operators (never replayed).
   * @returns `false` when the lease is no longer the caller's.
   */
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    if (!this.#ownsRecord(lease)) return Promise.resolve(false);
    return this.#run("fail", async () => {
      const reply = await this.#eval(this.#scripts.fail, lease.recordId, [
        lease.leaseToken,
        error.message.slice(0, MAX_ERROR_MESSAGE),
        error.status === undefined ? "" : String(error.status),
      ]);
      return reply === 1;
    });
  }

  /**
   * Renews the lease from Redis's clock.
   *
   * @param lease What `begin` returned with `started`.
   * @param lockTimeoutSeconds The new lease length, from now.
   * @returns `false` when the lease is no longer the caller's.
   */
  extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    if (!this.#ownsRecord(lease)) return Promise.resolve(false);
    return this.#run("extendLease", async () => {
      const reply = await this.#eval(this.#scripts.extend, lease.recordId, [
        lease.leaseToken,
        String(lockTimeoutSeconds * 1000),
      ]);
      return reply === 1;
    });
  }

  /**
   * One HMGET. A key outlives its expires_at while a worker holds a live lease on it; such a record reads
   * as `null`, as on Postgres. That check uses this process's clock (a read-only call runs no script).
   *
   * @param scope The key and its user.
   * @returns The key's state, or `null` when there is none (or it expired).
   */
  status(scope: KeyScope): Promise<KeyStatus | null> {
    return this.#run("status", async () => {
      const client = await this.#ready();
      const values = await client.hmGet(this.#recordKey(scope), STATUS_FIELDS) as (string | null)[];
      const status = toKeyStatus(scope.key, values);
      return status && status.expiresAt.getTime() > Date.now() ? status : null;
    });
  }

  /**
   * Always 0: every record carries PEXPIREAT at its expiry (or at the end of a live lease, if later), so
   * Redis deletes expired records itself.
   *
   * @param _options `batchSize`: the most records deleted per batch.
   * @returns How many records were deleted.
   */
  cleanup(_options?: { batchSize?: number }): Promise<number> {
    return Promise.resolve(0);
  }

  /** Closes the connection this store opened, after pending replies; a passed-in client stays open. */
  async close(): Promise<void> {
    this.#closed = true;
    if (!this.#owned) return;
    await this.#connecting?.catch(() => {});
    if (!this.#owned.isOpen) return;
    // A connection that never became ready cannot answer: a silent server would hold close() for ever.
    if (this.#owned.isReady) await this.#owned.close();
    else this.#owned.destroy();
  }

  #recordKey(scope: KeyScope): string {
    return recordKey(this.#prefix, scope);
  }

  /** A record id from another prefix (or none of ours) cannot hold our lease; skip the round trip. */
  #ownsRecord(lease: Lease): boolean {
    return lease.recordId.startsWith(this.#prefix);
  }

  /** EVALSHA, and EVAL once when Redis has not cached the script yet (after a restart or SCRIPT FLUSH). */
  async #eval(script: Script, key: string, args: string[]): Promise<unknown> {
    const client = await this.#ready();
    const options = { keys: [key], arguments: args };
    try {
      return await client.evalSha(await script.sha1, options);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith("NOSCRIPT"))) throw error;
      return await client.eval(script.source, options);
    }
  }

  /** Connects an owned client on first use, and again after a dropped connection; concurrent callers share it. */
  async #ready(): Promise<RedisScriptClient> {
    if (this.#closed) throw new Error("the store is closed");
    const owned = this.#owned;
    if (!owned || owned.isReady) return this.#client;
    this.#connecting ??= connectWithin(owned, this.#connectTimeoutMs).finally(() => {
      this.#connecting = undefined;
    });
    await this.#connecting;
    return this.#client;
  }

  /**
   * Runs one call within the command timeout, naming this store and the method in any error so a 503 log
   * says what was unreachable. Bad arguments (RangeError) pass through as they are.
   */
  async #run<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await within(
        call(),
        this.#commandTimeoutMs,
        `no reply within ${this.#commandTimeoutMs / 1000}s`,
      );
    } catch (error) {
      if (error instanceof RangeError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`redis store: ${method} failed: ${message}`, { cause: error });
    }
  }
}

/**
 * A client that fails fast instead of queueing: with no offline queue and no background reconnect, a call
 * while Redis is down rejects at once (the middleware then answers 503 or fails open), and the next call
 * connects again.
 */
function ownClient(options: RedisStoreOptions, connectTimeoutMs: number): OwnedClient {
  const client = createClient({
    url: options.url ?? Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
    disableOfflineQueue: true,
    // The store's own deadline (connectWithin) decides; the driver's, a little later, only backs it up, so
    // the two equal timers never race over which error the caller gets.
    socket: { connectTimeout: connectTimeoutMs + 1000, reconnectStrategy: false },
  });
  // Socket errors also reject the pending call, which reports them; without a listener they would crash.
  client.on("error", () => {});
  return client;
}

/** Connects, handshake included, or gives up after `ms` and drops the half-open socket. */
async function connectWithin(client: OwnedClient, ms: number): Promise<void> {
  if (client.isOpen) return;
  try {
    await within(client.connect(), ms, `no connection within ${ms / 1000}s`);
  } catch (error) {
    if (client.isOpen) client.destroy();
    throw error;
  }
}

/**
 * The Redis key of a scope's record. The scope tag keeps the shared scope (`s:`) apart from every user
 * (`u:`), and escaping `%` and `:` in the user id leaves no `:` in it, so the first `:` after the id ends it
 * whatever the id and the key hold: no two scopes share a key name.
 */
function recordKey(prefix: string, scope: KeyScope): string {
  if (scope.userId === null) return `${prefix}s:${scope.key}`;
  return `${prefix}u:${scope.userId.replaceAll("%", "%25").replaceAll(":", "%3A")}:${scope.key}`;
}

function script(source: string): Script {
  return { source, sha1: sha1Hex(source) };
}

async function sha1Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads `{'started', token, attempt}`, `{'replay', status, headers, body, encoding, replays}`, ... */
function beginResultOf(recordId: string, reply: unknown): BeginResult {
  if (!Array.isArray(reply)) throw new Error(`unexpected begin reply: ${JSON.stringify(reply)}`);
  const [outcome, first, second, third, fourth, fifth] = reply;
  return toBeginResult({
    outcome,
    recordId,
    leaseToken: first,
    attempt: second,
    retryAfterSeconds: first,
    replayCount: fifth,
    response: () =>
      storedResponse(
        first,
        second ? JSON.parse(String(second)) : {},
        new Uint8Array(Buffer.from(String(third ?? ""), "base64")),
        fourth,
      ),
  });
}

/** Maps the HMGET of {@link STATUS_FIELDS}; `null` when the hash does not exist. */
function toKeyStatus(key: string, values: (string | null)[]): KeyStatus | null {
  const [functionName, status, statusCode, attempts, replays, createdAt, completedAt, expiresAt] = values;
  if (!status) return null;
  return {
    key,
    functionName: functionName ?? "",
    status: status as KeyStatus["status"],
    statusCode: statusCode ? Number(statusCode) : null,
    attemptCount: Number(attempts),
    replayCount: Number(replays),
    createdAt: new Date(Number(createdAt)),
    completedAt: completedAt ? new Date(Number(completedAt)) : null,
    expiresAt: new Date(Number(expiresAt)),
  };
}
