import assert from "node:assert/strict";
import {
  isConnectionFailure,
  isNextWriteDefect,
  isOrphanSocketError,
  QueryTimeoutError,
  withDeadline,
} from "./_postgres_client.ts";
import { isStoreOutage, sqlState } from "./_outage.ts";

/** An error with the given fields and stack frames, as the runtime or the driver raise them. */
function raised(error: Error, fields: Record<string, unknown>, frames: string[]): Error {
  Object.assign(error, fields);
  error.stack = `${error.name}: ${error.message}\n${frames.map((f) => `    at ${f}`).join("\n")}`;
  return error;
}

const DRIVER = "file:///x/node_modules/.deno/postgres@3.4.9/node_modules/postgres/src/connection.js:255:22";

Deno.test("guard: only the driver's nextWrite TypeError is the defect", () => {
  const message = "Cannot read properties of null (reading 'write')";
  assert.ok(isNextWriteDefect(raised(new TypeError(message), {}, [`nextWrite (${DRIVER})`])));
  assert.ok(!isNextWriteDefect(raised(new TypeError(message), {}, ["nextWrite (file:///app/mine.ts:1:1)"])));
  assert.ok(!isNextWriteDefect(raised(new TypeError("other"), {}, [`nextWrite (${DRIVER})`])));
  assert.ok(!isNextWriteDefect(raised(new Error(message), {}, [`nextWrite (${DRIVER})`])));
});

Deno.test("guard: socket errors with no frame outside the runtime and the driver, and nothing else", () => {
  const internal = ["WriteWrap.onWriteComplete (ext:deno_node/internal/stream_base_commons.ts:1:1863)"];
  assert.ok(
    isOrphanSocketError(raised(new Error("write EPIPE"), { code: "EPIPE", syscall: "write" }, internal)),
  );
  assert.ok(isOrphanSocketError(raised(new Error("closed"), { code: "CONNECTION_CLOSED" }, [
    `Socket.closed (${DRIVER})`,
    "Socket.emit (ext:deno_node/_events.mjs:4:461)",
  ])));
  // a query the application forgot to await carries the application's frames: not cancelled
  assert.ok(
    !isOrphanSocketError(raised(new Error("closed"), { code: "CONNECTION_CLOSED" }, [
      `Socket.closed (${DRIVER})`,
      "handler (file:///app/index.ts:3:3)",
    ])),
  );
  assert.ok(!isOrphanSocketError(raised(new Error("x"), { code: "ENOENT" }, internal)));
  assert.ok(!isOrphanSocketError(raised(new Error("x"), { code: "EPIPE" }, [])));
  assert.ok(!isOrphanSocketError("EPIPE"));
});

Deno.test("outage: connection failures and transient SQLSTATEs are outages, constraint errors are not", () => {
  const wrapped = (cause: unknown) => new Error("postgres store: begin failed", { cause });
  assert.ok(isStoreOutage(wrapped(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }))));
  assert.ok(isStoreOutage(new QueryTimeoutError(3000)));
  for (const code of ["08006", "53300", "57014", "57P01", "40001", "40P01", "55P03"]) {
    assert.ok(isStoreOutage(wrapped(Object.assign(new Error(code), { code }))), code);
  }
  for (const code of ["23503", "23505", "42501", "22P02", "P0001"]) {
    assert.ok(!isStoreOutage(wrapped(Object.assign(new Error(code), { code }))), code);
    assert.equal(sqlState(wrapped(Object.assign(new Error(code), { code }))), code);
  }
  assert.ok(isConnectionFailure(wrapped(Object.assign(new Error("x"), { code: "CONNECTION_CLOSED" }))));
  assert.ok(!isConnectionFailure(wrapped(Object.assign(new Error("x"), { code: "23503" }))));
});

/** A stand-in for a postgres.js pending query: a promise with the driver's `canceller`. */
function fakeQuery<T>() {
  const { promise, resolve, reject } = Promise.withResolvers<T>();
  const cancels: unknown[] = [];
  const query = Object.assign(promise, {
    canceller: (q: unknown) => {
      cancels.push(q);
      return Promise.reject(new Error("the cancel could not reach the server"));
    },
    cancel: () => null,
  });
  return { query, resolve, reject, cancels };
}

Deno.test("withDeadline: an answer in time passes through, and no cancel is sent", async () => {
  const { query, resolve, cancels } = fakeQuery<string>();
  const result = withDeadline(query, 1000);
  resolve("rows");
  assert.equal(await result, "rows");
  assert.equal(cancels.length, 0);
});

Deno.test("withDeadline: past the deadline it rejects, cancels once, and hands a late result over", async () => {
  const { query, resolve, cancels } = fakeQuery<string>();
  const late: string[] = [];
  await assert.rejects(withDeadline(query, 20, (r) => late.push(r)), QueryTimeoutError);
  assert.equal(cancels.length, 1, "the cancel request was sent (its failure stays handled)");
  resolve("granted after all");
  await query;
  assert.deepEqual(late, ["granted after all"]);
});
