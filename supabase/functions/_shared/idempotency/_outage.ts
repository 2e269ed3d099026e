/**
 * Which store failures are an outage (503 with `Retry-After`, or fail-open) and which are not.
 *
 * Only a failure to reach or hear from the store is an outage: a refused or dropped connection, a timeout, a
 * server shutting down or out of connections, a statement cancelled at our deadline, a lock or serialization
 * conflict that a retry resolves. A database error with any other SQLSTATE (a constraint, a permission, a
 * bad value) will fail the same way on every retry, so calling it an outage would make clients retry for
 * ever: it is answered as an internal error instead.
 */

/** SQLSTATE classes and codes that a retry can get past. */
const TRANSIENT_SQLSTATE = [
  /^08/, // connection exception
  /^53/, // insufficient resources (too many connections, out of memory, disk full)
  /^57/, // operator intervention: 57014 query_canceled (our deadline), 57P01-57P03 shutdown, cannot connect now
  /^58/, // system error (I/O)
  /^40001$/, // serialization_failure
  /^40P01$/, // deadlock_detected
  /^55P03$/, // lock_not_available
] as const;

const SQLSTATE = /^[0-9A-Z]{5}$/;

/** The first SQLSTATE found on `error` or its causes, or null when none is a database error. */
export function sqlState(error: unknown): string | null {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && SQLSTATE.test(code) && !code.startsWith("E")) return code;
  }
  return null;
}

/** Whether a store failure means "unavailable, retry later" rather than "this request cannot succeed". */
export function isStoreOutage(error: unknown): boolean {
  const state = sqlState(error);
  return state === null || TRANSIENT_SQLSTATE.some((pattern) => pattern.test(state));
}

/**
 * Whether `error` is the foreign key of a record's user: the signed-in user was deleted (401
 * `USER_NOT_FOUND`, not an outage).
 */
export function isMissingUser(error: unknown): boolean {
  const e = error as { code?: unknown; constraint_name?: unknown };
  return e?.code === "23503" && typeof e.constraint_name === "string" &&
    e.constraint_name.includes("user_id");
}
