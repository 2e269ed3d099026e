/**
 * The Redis backend, on its own import path so that only a function that chooses Redis loads node-redis
 * (`npm:redis`, about 3.3 MB of modules): the main entry `../idempotency.ts` does not re-export it.
 *
 * @example Use Redis for one function
 * ```ts
 * import { withIdempotency } from "../_shared/idempotency.ts";
 * import { RedisStore } from "../_shared/idempotency/redis.ts";
 *
 * const store = new RedisStore({ url: Deno.env.get("REDIS_URL") });
 * export default {
 *   fetch: withIdempotency(() => new Response("done"), { functionName: "charge", store }),
 * } satisfies Deno.ServeDefaultExport;
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
