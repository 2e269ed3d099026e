/**
 * The Postgres action store, apart from `actions.ts` so that only its users load `npm:postgres`.
 *
 * @example
 * ```ts
 * import { ActionIdempotency } from "../_shared/actions.ts";
 * import { PostgresActionStore } from "../_shared/actions_postgres.ts";
 *
 * const actions = new ActionIdempotency({ store: new PostgresActionStore({ sql }) });
 * ```
 *
 * @module
 */

export {
  type ActionSql,
  type ActionTransactionSql,
  PostgresActionStore,
  type PostgresActionStoreOptions,
} from "./idempotency/actions/postgres.ts";
