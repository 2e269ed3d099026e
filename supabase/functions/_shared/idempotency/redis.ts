/**
 * The Redis backend, on its own import path so that only a function that chooses Redis loads node-redis
 * (`npm:redis`, about 3.3 MB of modules): the main entry `../idempotency.ts` does not re-export it.
 *
 * @example Use Redis for one function
 * ```ts
 * // in supabase/functions/<name>/index.ts: "../_shared/idempotency.ts" and "../_shared/idempotency/redis.ts"
 * import { withIdempotency } from "../idempotency.ts";
 * import { RedisStore } from "./redis.ts";
 *
 * const store = new RedisStore({ url: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379" });
 * const entry = {
 *   fetch: withIdempotency(() => new Response("done"), { functionName: "charge", store }),
 * } satisfies Deno.ServeDefaultExport; // `export default entry;` in index.ts
 * console.assert(typeof entry.fetch === "function");
 * await store.close();
 * ```
 *
 * @module
 */

export {
  type RedisScriptClient,
  type RedisScriptOptions,
  RedisStore,
  type RedisStoreOptions,
} from "./stores/redis.ts";
export {
  type FrontCache,
  type FrontEntry,
  LayeredStore,
  type LayeredStoreOptions,
  RedisFrontCache,
  type RedisFrontCacheOptions,
} from "./stores/layered.ts";
