/**
 * The crash harness's serving process: the three real functions' work, wrapped as deployed but with a
 * 1-second lease and a test-only seam that SIGKILLs this very process at a named point of a request. The
 * point comes per request in the `x-test-crash-at` header (absent: no crash), so retries run normally.
 *
 *   SUPABASE_DB_URL=... SUPABASE_JWT_SECRET=... TRAINER_URL=... deno run -A tests/crash/server.ts
 *   → prints `listening <port>`
 *
 * Points: after-claim, mid-writes (after the handler's first write, inside its transaction), after-handler
 * (all writes done, not committed), after-commit (committed, the answer not sent), mid-step (the external
 * trainer answered, the step not recorded), after-step (the step recorded, the job row not written).
 */

import { AsyncLocalStorage } from "node:async_hooks";
import {
  type TransactionalHandler,
  type TransactionalHooks,
  withIdempotentTransaction,
} from "../../supabase/functions/_shared/idempotency.ts";
import { work as generateTrainingData } from "../../supabase/functions/generate-training-data/index.ts";
import { work as processDocument } from "../../supabase/functions/process-document/index.ts";
import { work as startTraining } from "../../supabase/functions/start-training/index.ts";

const crashAt = new AsyncLocalStorage<string | null>();

/** SIGKILL, not a clean exit: no finally block, no connection close, no flush runs. */
function crashIf(point: string): void {
  if (crashAt.getStore() === point) Deno.kill(Deno.pid, "SIGKILL");
}

const hooks: TransactionalHooks = {
  afterClaim: () => crashIf("after-claim"),
  afterHandler: () => crashIf("after-handler"),
  afterCommit: () => crashIf("after-commit"),
  afterStep: () => crashIf("after-step"),
};

/** The handler's transaction, killed after its first statement when the point is mid-writes. */
const midWrites = (work: TransactionalHandler): TransactionalHandler => (req, ctx) => {
  if (crashAt.getStore() !== "mid-writes") return work(req, ctx);
  const tx = new Proxy(ctx.tx, {
    apply: (target, self, args) => {
      const query = Reflect.apply(target, self, args) as Promise<unknown>;
      return query.then((rows) => {
        crashIf("mid-writes");
        return rows;
      });
    },
  });
  return work(req, { ...ctx, tx });
};

// the external call: the trainer has answered (and started a job), the step is not recorded yet
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const response = await realFetch(input, init);
  if (String(input instanceof Request ? input.url : input).endsWith("/jobs")) {
    await response.clone().arrayBuffer();
    crashIf("mid-step");
  }
  return response;
};

const options = { lockTimeoutSeconds: 1, maxRunSeconds: 10, hooks };
const functions = new Map<string, (req: Request) => Promise<Response>>([
  [
    "process-document",
    withIdempotentTransaction(midWrites(processDocument), { functionName: "process-document", ...options }),
  ],
  [
    "generate-training-data",
    withIdempotentTransaction(midWrites(generateTrainingData), {
      functionName: "generate-training-data",
      ...options,
    }),
  ],
  [
    "start-training",
    withIdempotentTransaction(midWrites(startTraining), { functionName: "start-training", ...options }),
  ],
]);

Deno.serve(
  {
    hostname: "127.0.0.1",
    port: Number(Deno.env.get("PORT") ?? "0"),
    onListen: ({ port }) => console.log(`listening ${port}`),
  },
  (req) => {
    const name = new URL(req.url).pathname.split("/").pop() ?? "";
    const handler = functions.get(name);
    if (!handler) return Response.json({ error: { code: "NOT_FOUND", message: name } }, { status: 404 });
    return crashAt.run(req.headers.get("x-test-crash-at"), () => handler(req));
  },
);
