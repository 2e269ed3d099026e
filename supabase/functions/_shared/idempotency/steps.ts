/**
 * Resumable steps: the key each step hands to an external service. Pure.
 *
 * A public import path of its own: a handler gets each step's key from `ctx.step`; only a service that
 * must compute the same key itself (a test, a trainer that checks it) imports {@link stepKeyOf}.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { BeginInput } from "./store.ts";

/**
 * The key of step `name` of one keyed request, for the external service it calls: the same on every retry
 * of that request (so the service can deduplicate a call made just before a crash), different for every
 * other user, function, key or step. `step_` and 40 hex characters, a valid idempotency key anywhere.
 *
 * @param scope The claim's function, user and key.
 * @param name The step's name.
 * @returns The derived key.
 * @example The key a trainer call carries
 * ```ts
 * import { stepKeyOf } from "./steps.ts";
 *
 * const key = stepKeyOf({ functionName: "start-training", userId: null, key: "k-1" }, "submit");
 * console.assert(key.startsWith("step_") && key.length === 45);
 * ```
 */
export function stepKeyOf(scope: Pick<BeginInput, "functionName" | "userId" | "key">, name: string): string {
  const digest = createHash("sha256")
    .update([scope.functionName, scope.userId ?? "", scope.key, name].join("\u0000"))
    .digest("hex");
  return `step_${digest.slice(0, 40)}`;
}
