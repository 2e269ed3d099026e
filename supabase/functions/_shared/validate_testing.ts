/** Test support for the validators (imported by tests only, never by a function). */

import assert from "node:assert/strict";
import { FunctionError } from "./http.ts";

/** Asserts that `fn` throws 400 INVALID_REQUEST whose message starts with `field:`. */
export function assertInvalid(fn: () => unknown, field: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof FunctionError, `expected a FunctionError, got ${error}`);
    assert.equal(error.code, "INVALID_REQUEST");
    assert.equal(error.status, 400);
    assert.ok(error.message.startsWith(`${field}: `), `"${error.message}" should name ${field}`);
    return true;
  });
}
