/**
 * The Redis action store, apart from `actions.ts` so that only its users load `npm:redis`.
 *
 * @example
 * ```ts
 * import { ActionIdempotency } from "../_shared/actions.ts";
 * import { RedisActionStore } from "../_shared/actions_redis.ts";
 *
 * const actions = new ActionIdempotency({ store: new RedisActionStore({ url: Deno.env.get("REDIS_URL") }) });
 * ```
 *
 * @module
 */

export { RedisActionStore, type RedisActionStoreOptions } from "./idempotency/actions/redis.ts";
