/**
 * How soon a waiting duplicate (`onInFlight: "wait"`) is answered after the first request finishes, for a
 * 50 ms handler on the in-memory store: in the same isolate (woken by the first's finish) and from another
 * isolate (two wrappers sharing one store, as two edge function instances share Postgres or Redis).
 *
 *   deno run --allow-all bench/wait/wait_latency.ts [--trials 40] [--middleware <path of another middleware.ts>]
 *
 * `--middleware` measures another version of middleware.ts (e.g. an older one written next to the current
 * file) in the same run, for a before/after comparison. Prints the delay after the first's answer (p50, max).
 */
import { parseArgs } from "node:util";
import { MemoryStore } from "../../supabase/functions/_shared/idempotency.ts";
import type {
  Handler,
  IdempotencyOptions,
  IdempotentHandler,
} from "../../supabase/functions/_shared/idempotency.ts";

type Wrap = (handler: Handler, options: IdempotencyOptions) => IdempotentHandler;

const { values } = parseArgs({
  args: Deno.args,
  options: { trials: { type: "string", default: "40" }, middleware: { type: "string" } },
});
const TRIALS = Number(values.trials);
const HANDLER_MS = 50;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One trial: the first request, a duplicate 10 ms later; returns how long after the first the duplicate ended. */
async function trial(first: IdempotentHandler, duplicate: IdempotentHandler, key: string): Promise<number> {
  const request = () =>
    new Request("http://localhost/wait", {
      method: "POST",
      headers: { "idempotency-key": key, "content-type": "application/json" },
      body: "{}",
    });
  let firstDone = 0;
  const a = first(request()).then(async (res) => {
    await res.arrayBuffer();
    firstDone = performance.now();
  });
  await sleep(10);
  const res = await duplicate(request());
  await res.arrayBuffer();
  const duplicateDone = performance.now();
  await a;
  if (res.headers.get("x-idempotency-replay") !== "true") throw new Error(`not a replay: ${res.status}`);
  return duplicateDone - firstDone;
}

async function measure(label: string, wrap: Wrap): Promise<void> {
  const store = new MemoryStore();
  const handler: Handler = async () => {
    await sleep(HANDLER_MS);
    return Response.json({ ok: true }, { status: 201 });
  };
  const options: IdempotencyOptions = {
    functionName: "wait-bench",
    store,
    getUserId: () => null,
    anonymous: "shared",
    onInFlight: "wait",
  };
  const isolateA = wrap(handler, options);
  const isolateB = wrap(handler, options);
  for (const [where, duplicate] of [["same isolate", isolateA], ["another isolate", isolateB]] as const) {
    const delays: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      delays.push(await trial(isolateA, duplicate, `${label}-${where}-${i}`.replaceAll(" ", "_")));
    }
    delays.sort((x, y) => x - y);
    const p50 = delays[Math.floor(delays.length / 2)]!;
    console.log(
      `${label.padEnd(10)} ${where.padEnd(16)} p50 ${p50.toFixed(1).padStart(6)} ms  max ${
        delays.at(-1)!.toFixed(1).padStart(6)
      } ms`,
    );
  }
}

console.log(
  `a ${HANDLER_MS} ms handler, a duplicate 10 ms after it, ${TRIALS} trials: the duplicate's answer after the first's`,
);
const current = await import("../../supabase/functions/_shared/idempotency/middleware.ts");
if (values.middleware) {
  const other = await import(new URL(values.middleware, `file://${Deno.cwd()}/`).href);
  await measure("other", other.withIdempotency as Wrap);
}
await measure("current", current.withIdempotency as Wrap);
