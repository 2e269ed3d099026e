/**
 * The Redis action store (node-redis, `npm:redis@5.10.0`). Each state change is one Lua script, which
 * Redis runs atomically, reading its own clock with `TIME`. Records are hashes; sorted sets scored by
 * expiry index them by state, action type, target and signal, so counts and queries do not scan every key.
 * Counters live in one Redis hash, shared by every instance.
 *
 * Every key shares the hash tag `{prefix}`, so on Redis Cluster all of them sit in one slot (the scripts
 * touch index keys they name themselves, which Cluster allows only within one slot).
 *
 * Redis deletes a record's hash by itself one hour after it expires (`PEXPIREAT`); `cleanupExpired` (run
 * by auto cleanup) removes expired records and their index entries before that, and counts them.
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- a full specifier, so a function resolves it from its own deno.json
import { createClient } from "npm:redis@5.10.0";
import type { ActionMeta } from "./keys.ts";
import {
  type ActionCheck,
  type ActionLease,
  type ActionRecord,
  type ActionStatus,
  type ActionStore,
  checkMs,
  checkThroughGet,
  type ClaimInput,
  type ClaimResult,
  type FindQuery,
  type StoreInfo,
  type StoreStats,
} from "./store.ts";
import { within } from "../_within.ts";

/** Options for {@link RedisActionStore}. */
export interface RedisActionStoreOptions {
  /** Where Redis is. @default Deno.env REDIS_URL, else redis://127.0.0.1:6379 */
  url?: string;
  /** Names the key space (in a hash tag), so several apps can share one Redis. @default "actions" */
  prefix?: string;
  /** How long connecting and each call may take, in seconds. @default 5 */
  timeoutSeconds?: number;
}

type Client = ReturnType<typeof createClient>;

const LIB = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base = ARGV[1]
local GRACE = 3600000
local STATUSES = {'processing', 'completed', 'failed'}
local function ms(n) return string.format('%.0f', n) end
local function rkey(key) return base .. 'r:' .. key end
local function effective(k)
  local r = redis.call('HMGET', k, 'status', 'locked_until', 'expires_at')
  local lu, exp = tonumber(r[2]) or 0, tonumber(r[3]) or 0
  if r[1] == 'processing' and lu > exp then return lu end
  return exp
end
local function is_live(k)
  local r = redis.call('HMGET', k, 'status', 'locked_until', 'expires_at')
  if not r[1] then return false end
  return tonumber(r[3]) > now or (r[1] == 'processing' and tonumber(r[2]) > now)
end
local function meta_sets(k)
  local m = redis.call('HMGET', k, 'action_type', 'target', 'signal_id')
  local sets = {}
  if m[1] then table.insert(sets, base .. 'ix:type:' .. m[1]) end
  if m[2] then table.insert(sets, base .. 'ix:target:' .. m[2]) end
  if m[3] then table.insert(sets, base .. 'ix:signal:' .. m[3]) end
  return sets
end
local function unindex(k, key)
  for _, s in ipairs(STATUSES) do redis.call('ZREM', base .. 'ix:st:' .. s, key) end
  for _, s in ipairs(meta_sets(k)) do redis.call('ZREM', s, key) end
  redis.call('ZREM', base .. 'ix:exp', key)
  redis.call('ZREM', base .. 'ix:created', key)
end
local function index(k, key)
  local score = ms(effective(k))
  local r = redis.call('HMGET', k, 'status', 'created_at')
  for _, s in ipairs(STATUSES) do
    if s ~= r[1] then redis.call('ZREM', base .. 'ix:st:' .. s, key) end
  end
  redis.call('ZADD', base .. 'ix:st:' .. r[1], score, key)
  for _, s in ipairs(meta_sets(k)) do redis.call('ZADD', s, score, key) end
  redis.call('ZADD', base .. 'ix:exp', score, key)
  redis.call('ZADD', base .. 'ix:created', r[2], key)
  redis.call('PEXPIREAT', k, ms(tonumber(score) + GRACE))
end
local function count(field, n) redis.call('HINCRBY', base .. 'stats', field, n) end
local function finish_guard(k, token)
  local r = redis.call('HMGET', k, 'status', 'lease_token')
  return r[1] == 'processing' and r[2] == token
end
`;

/** KEYS[1] record; ARGV base, key, type, target, signal, params hash, ttl, lease, retry (1/0), token. */
const CLAIM = `${LIB}
local k, key = KEYS[1], ARGV[2]
local ttl, lease, retry, token = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[10]
local r = redis.call('HMGET', k, 'status', 'locked_until', 'expires_at', 'attempt_count')
local status, lu, exp, att = r[1], tonumber(r[2]) or 0, tonumber(r[3]) or 0, tonumber(r[4]) or 0
local live = status == 'processing' and lu > now
if (not status) or (exp <= now and not live) then
  if status then
    unindex(k, key)
    redis.call('DEL', k)
  end
  redis.call('HSET', k, 'status', 'processing', 'lease_token', token, 'locked_until', ms(now + lease),
    'attempt_count', 1, 'created_at', ms(now), 'expires_at', ms(now + ttl))
  local fields = {'action_type', 'target', 'signal_id', 'params_hash'}
  for i, f in ipairs(fields) do
    if ARGV[2 + i] ~= '' then redis.call('HSET', k, f, ARGV[2 + i]) end
  end
  index(k, key)
  count('misses', 1)
  return {'started', token, 1}
end
if status == 'completed' then
  count('hits', 1)
  count('duplicates', 1)
  return {'completed', redis.call('HGETALL', k)}
end
if live then
  count('duplicates', 1)
  return {'in_progress', redis.call('HGETALL', k), lu - now}
end
if status == 'failed' and retry == '0' then return {'failed', redis.call('HGETALL', k)} end
redis.call('HSET', k, 'status', 'processing', 'lease_token', token, 'locked_until', ms(now + lease),
  'attempt_count', att + 1)
redis.call('HDEL', k, 'result', 'error', 'executed_at')
index(k, key)
count('misses', 1)
return {'started', token, att + 1}
`;

/** KEYS[1] record; ARGV base, key, token, result JSON. */
const COMPLETE = `${LIB}
local k = KEYS[1]
if not finish_guard(k, ARGV[3]) then return 0 end
local r = redis.call('HMGET', k, 'expires_at', 'created_at')
local exp = math.max(tonumber(r[1]), now + tonumber(r[1]) - tonumber(r[2]))
redis.call('HSET', k, 'status', 'completed', 'result', ARGV[4], 'executed_at', ms(now), 'expires_at', ms(exp))
redis.call('HDEL', k, 'lease_token', 'locked_until', 'error')
index(k, ARGV[2])
return 1
`;

/** KEYS[1] record; ARGV base, key, token, error. */
const FAIL = `${LIB}
local k = KEYS[1]
if not finish_guard(k, ARGV[3]) then return 0 end
redis.call('HSET', k, 'status', 'failed', 'error', ARGV[4], 'executed_at', ms(now))
redis.call('HDEL', k, 'lease_token', 'locked_until', 'result')
index(k, ARGV[2])
return 1
`;

/** KEYS[1] record; ARGV base, key, token, lease ms. */
const EXTEND = `${LIB}
local k = KEYS[1]
if not finish_guard(k, ARGV[3]) then return 0 end
redis.call('HSET', k, 'locked_until', ms(now + math.max(tonumber(ARGV[4]), 1000)))
index(k, ARGV[2])
return 1
`;

/** KEYS[1] record; ARGV base, key, count (1/0). */
const GET = `${LIB}
local k = KEYS[1]
local live = is_live(k)
if ARGV[3] == '1' then
  if live and redis.call('HGET', k, 'status') == 'completed' then count('hits', 1) else count('misses', 1) end
end
if not live then return false end
return redis.call('HGETALL', k)
`;

/** KEYS[1] record; ARGV base, key. */
const DELETE = `${LIB}
local k = KEYS[1]
local r = redis.call('HMGET', k, 'status', 'locked_until')
if not r[1] then return 0 end
if r[1] == 'processing' and tonumber(r[2]) > now then return 0 end
unindex(k, ARGV[2])
redis.call('DEL', k)
return 1
`;

/** ARGV base. Every record not under a live lease; O(records). */
const CLEAR = `${LIB}
local n = 0
for _, key in ipairs(redis.call('ZRANGE', base .. 'ix:created', 0, -1)) do
  local k = rkey(key)
  local r = redis.call('HMGET', k, 'status', 'locked_until')
  if not (r[1] == 'processing' and tonumber(r[2]) > now) then
    unindex(k, key)
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
`;

/** ARGV base, batch. Expired records (by the expiry index), at most one batch. */
const CLEANUP = `${LIB}
local n = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', base .. 'ix:exp', '-inf', ms(now), 'LIMIT', 0, tonumber(ARGV[2]))) do
  local k = rkey(key)
  if is_live(k) then
    index(k, key)
  else
    unindex(k, key)
    redis.call('DEL', k)
    n = n + 1
  end
end
if n > 0 then count('expired', n) end
return n
`;

/** ARGV base. Live counts per state, then the counters hash. */
const STATS = `${LIB}
local out = {}
for _, s in ipairs(STATUSES) do
  table.insert(out, redis.call('ZCOUNT', base .. 'ix:st:' .. s, '(' .. ms(now), '+inf'))
end
table.insert(out, redis.call('HGETALL', base .. 'stats'))
return out
`;

/** ARGV base, index set, type, target, signal, status, expires before ('' = any), limit. */
const FIND = `${LIB}
local set, limit = ARGV[2], tonumber(ARGV[8])
local want = {ARGV[3], ARGV[4], ARGV[5], ARGV[6]}
local before = tonumber(ARGV[7])
local out, offset = {}, 0
-- members whose hash Redis already dropped (an hour past expiry) would only be skipped again
if set ~= base .. 'ix:exp' then redis.call('ZREMRANGEBYSCORE', set, '-inf', '(' .. ms(now - GRACE)) end
while #out < limit do
  local page = redis.call('ZRANGEBYSCORE', set, '(' .. ms(now), '+inf', 'LIMIT', offset, 200)
  if #page == 0 then break end
  offset = offset + #page
  for _, key in ipairs(page) do
    local k = rkey(key)
    local r = redis.call('HMGET', k, 'action_type', 'target', 'signal_id', 'status', 'expires_at')
    local ok = r[4] ~= false and is_live(k)
    for i = 1, 4 do
      if ok and want[i] ~= '' and r[i] ~= want[i] then ok = false end
    end
    if ok and before and tonumber(r[5]) >= before then ok = false end
    if ok then
      table.insert(out, key)
      table.insert(out, redis.call('HGETALL', k))
      if #out >= limit * 2 then break end
    end
  end
end
return out
`;

interface Script {
  source: string;
  sha1: Promise<string>;
}

/**
 * An {@link ActionStore} on Redis.
 *
 * @example
 * ```ts
 * const store = new RedisActionStore({ url: "redis://127.0.0.1:6379" });
 * ```
 */
export class RedisActionStore implements ActionStore {
  /** Always `redis`. */
  readonly name = "redis";
  readonly #base: string;
  readonly #client: Client;
  readonly #timeoutMs: number;
  readonly #scripts: Record<
    "claim" | "complete" | "fail" | "extend" | "get" | "delete" | "clear" | "cleanup" | "stats" | "find",
    Script
  >;
  #connecting: Promise<unknown> | undefined;
  #closed = false;

  /** Connects lazily, on the first call. */
  constructor(options: RedisActionStoreOptions = {}) {
    this.#base = `{${options.prefix ?? "actions"}}:`;
    this.#timeoutMs = (options.timeoutSeconds ?? 5) * 1000;
    this.#client = createClient({
      url: options.url ?? Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
      disableOfflineQueue: true,
      socket: { connectTimeout: this.#timeoutMs, reconnectStrategy: false },
    });
    // socket errors also reject the pending call; without a listener they would crash the process
    this.#client.on("error", () => {});
    this.#scripts = {
      claim: script(CLAIM),
      complete: script(COMPLETE),
      fail: script(FAIL),
      extend: script(EXTEND),
      get: script(GET),
      delete: script(DELETE),
      clear: script(CLEAR),
      cleanup: script(CLEANUP),
      stats: script(STATS),
      find: script(FIND),
    };
  }

  /** One script: create, replay, in progress, failed or take over. */
  claim(input: ClaimInput): Promise<ClaimResult> {
    return this.#run("claim", async () => {
      checkMs("ttlMs", input.ttlMs);
      checkMs("leaseMs", input.leaseMs);
      const m: ActionMeta = input.meta;
      const reply = await this.#eval(this.#scripts.claim, input.key, [
        m.actionType ?? "",
        m.target ?? "",
        m.signalId ?? "",
        m.paramsHash ?? "",
        String(Math.ceil(input.ttlMs)),
        String(Math.ceil(input.leaseMs)),
        input.retryFailed ? "1" : "0",
        crypto.randomUUID(),
      ]) as [string, unknown, unknown?];
      switch (reply[0]) {
        case "started":
          return {
            outcome: "started",
            lease: { key: input.key, token: String(reply[1]) },
            attempt: Number(reply[2]),
          };
        case "in_progress":
          return {
            outcome: "in_progress",
            record: toRecord(input.key, reply[1] as string[]),
            retryAfterMs: Number(reply[2]),
          };
        case "completed":
        case "failed":
          return { outcome: reply[0], record: toRecord(input.key, reply[1] as string[]) };
        default:
          throw new Error(`unexpected claim reply: ${JSON.stringify(reply)}`);
      }
    });
  }

  /** Records the result under the lease guard. */
  complete(lease: ActionLease, resultJson: string): Promise<boolean> {
    return this.#run(
      "complete",
      async () => await this.#eval(this.#scripts.complete, lease.key, [lease.token, resultJson]) === 1,
    );
  }

  /** Records the failure under the lease guard. */
  fail(lease: ActionLease, error: string): Promise<boolean> {
    return this.#run(
      "fail",
      async () => await this.#eval(this.#scripts.fail, lease.key, [lease.token, error.slice(0, 2000)]) === 1,
    );
  }

  /** Renews the lease from Redis's clock. */
  extend(lease: ActionLease, leaseMs: number): Promise<boolean> {
    return this.#run(
      "extend",
      async () =>
        await this.#eval(this.#scripts.extend, lease.key, [lease.token, String(Math.ceil(leaseMs))]) === 1,
    );
  }

  /** The live record, judged by Redis's clock. */
  get(key: string, count = false): Promise<ActionRecord | null> {
    return this.#run("get", async () => {
      const reply = await this.#eval(this.#scripts.get, key, [count ? "1" : "0"]);
      return Array.isArray(reply) ? toRecord(key, reply as string[]) : null;
    });
  }

  /** `get(key, true)`: one round trip either way. */
  check(key: string): Promise<ActionCheck | null> {
    return checkThroughGet(this, key);
  }

  /** Deletes the record and its index entries, unless under a live lease. */
  delete(key: string): Promise<boolean> {
    return this.#run("delete", async () => await this.#eval(this.#scripts.delete, key, []) === 1);
  }

  /** Deletes every record not under a live lease (one script over the creation index). */
  clear(): Promise<number> {
    return this.#run("clear", async () => Number(await this.#evalBase(this.#scripts.clear, [])));
  }

  /** Counts from the state indexes, counters from the stats hash. */
  stats(): Promise<StoreStats> {
    return this.#run("stats", async () => {
      const [processing, completed, failed, flat] = await this.#evalBase(this.#scripts.stats, []) as [
        number,
        number,
        number,
        string[],
      ];
      const counters = pairs(flat);
      const n = (name: string) => Number(counters[name] ?? 0);
      return {
        totalCached: processing + completed + failed,
        byStatus: { processing, completed, failed },
        cacheHits: n("hits"),
        cacheMisses: n("misses"),
        duplicatesPrevented: n("duplicates"),
        expiredCleaned: n("expired"),
        evicted: 0,
      };
    });
  }

  /** Deletes the counters hash. */
  resetStats(): Promise<void> {
    return this.#run("resetStats", async () => {
      await (await this.#ready()).del(`${this.#base}stats`);
    });
  }

  /** Sizes from the indexes; bytes from `MEMORY USAGE` of the indexes and a sample of 16 records. */
  info(): Promise<StoreInfo> {
    return this.#run("info", async () => {
      const client = await this.#ready();
      const created = `${this.#base}ix:created`;
      const size = await client.zCard(created);
      const oldest = await client.zRangeWithScores(created, 0, 0);
      const newest = await client.zRangeWithScores(created, -1, -1);
      const sample = await client.zRange(created, 0, 15);
      let sampleBytes = 0;
      for (const key of sample) sampleBytes += Number(await client.memoryUsage(`${this.#base}r:${key}`) ?? 0);
      let indexBytes = 0;
      for (const set of ["ix:created", "ix:exp", "ix:st:processing", "ix:st:completed", "ix:st:failed"]) {
        indexBytes += Number(await client.memoryUsage(`${this.#base}${set}`) ?? 0);
      }
      return {
        currentSize: size,
        maxSize: null,
        utilizationPercent: null,
        oldestEntry: oldest[0] ? new Date(oldest[0].score) : null,
        newestEntry: newest[0] ? new Date(newest[0].score) : null,
        approximateBytes: Math.round(indexBytes + (sample.length ? (sampleBytes / sample.length) * size : 0)),
      };
    });
  }

  /** Walks the most selective index (signal, action type, target, state, expiry) in one script. */
  find(query: FindQuery): Promise<ActionRecord[]> {
    return this.#run("find", async () => {
      const set = query.signalId !== undefined
        ? `ix:signal:${query.signalId}`
        : query.actionType !== undefined
        ? `ix:type:${query.actionType}`
        : query.target !== undefined
        ? `ix:target:${query.target}`
        : query.status !== undefined
        ? `ix:st:${query.status}`
        : "ix:exp";
      const flat = await this.#evalBase(this.#scripts.find, [
        `${this.#base}${set}`,
        query.actionType ?? "",
        query.target ?? "",
        query.signalId ?? "",
        query.status ?? "",
        query.expiresBefore === undefined ? "" : String(query.expiresBefore.getTime()),
        String(query.limit),
      ]) as unknown[];
      const records: ActionRecord[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        records.push(toRecord(String(flat[i]), flat[i + 1] as string[]));
      }
      return records.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
    });
  }

  /** Removes expired records and their index entries, a batch of 1000 per script. */
  cleanupExpired(): Promise<number> {
    return this.#run("cleanupExpired", async () => {
      let total = 0;
      for (;;) {
        const n = Number(await this.#evalBase(this.#scripts.cleanup, ["1000"]));
        total += n;
        if (n < 1000) return total;
      }
    });
  }

  /** Closes the connection after pending replies. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#connecting?.catch(() => {});
    if (this.#client.isOpen) await this.#client.close();
  }

  /** A script on one record: KEYS[1] is its hash, ARGV starts with the base and the action key. */
  #eval(s: Script, key: string, args: string[]): Promise<unknown> {
    return this.#evalWith(s, [`${this.#base}r:${key}`], [this.#base, key, ...args]);
  }

  /** A script over the indexes. */
  #evalBase(s: Script, args: string[]): Promise<unknown> {
    return this.#evalWith(s, [`${this.#base}ix:created`], [this.#base, ...args]);
  }

  async #evalWith(s: Script, keys: string[], args: string[]): Promise<unknown> {
    const client = await this.#ready();
    const options = { keys, arguments: args };
    try {
      return await client.evalSha(await s.sha1, options);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith("NOSCRIPT"))) throw error;
      return await client.eval(s.source, options);
    }
  }

  async #ready(): Promise<Client> {
    if (this.#closed) throw new Error("the store is closed");
    if (this.#client.isReady) return this.#client;
    this.#connecting ??= within(
      this.#client.connect(),
      this.#timeoutMs,
      `no reply within ${this.#timeoutMs / 1000}s`,
    ).finally(() => {
      this.#connecting = undefined;
    });
    await this.#connecting;
    return this.#client;
  }

  async #run<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await within(call(), this.#timeoutMs, `no reply within ${this.#timeoutMs / 1000}s`);
    } catch (error) {
      if (error instanceof RangeError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`redis action store: ${method} failed: ${message}`, { cause: error });
    }
  }
}

function toRecord(key: string, flat: string[]): ActionRecord {
  const h = pairs(flat);
  const status = (h.status ?? "processing") as ActionStatus;
  const date = (v: string | undefined) => v === undefined ? null : new Date(Number(v));
  return {
    key,
    actionType: h.action_type ?? null,
    target: h.target ?? null,
    signalId: h.signal_id ?? null,
    paramsHash: h.params_hash ?? null,
    status,
    result: status === "completed" && h.result !== undefined ? JSON.parse(h.result) : null,
    error: status === "failed" ? h.error ?? null : null,
    attemptCount: Number(h.attempt_count ?? 1),
    createdAt: new Date(Number(h.created_at)),
    executedAt: status === "processing" ? null : date(h.executed_at),
    expiresAt: new Date(Number(h.expires_at)),
    leaseExpiresAt: status === "processing" ? date(h.locked_until) : null,
  };
}

/** A flat `[field, value, ...]` reply as an object (node-redis gives nested EVAL replies as arrays). */
function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

function script(source: string): Script {
  return { source, sha1: sha1Hex(source) };
}

async function sha1Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
