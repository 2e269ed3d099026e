/**
 * The benchmark's server: the functions gateway's own request handler (scripts/gateway/server.ts, JWT
 * check included) serving the bare and the wrapped form of two handlers, in a process of its own as the
 * gateway runs. Started by scripts/bench.ts; prints `listening <port>` when ready; stops on SIGTERM.
 *
 *   echo                         no work, so the wrapper's own cost shows
 *   echo+<store>                 echo wrapped with the Postgres, Redis, in-memory or layered store
 *   process-document             the real function's bare handler (a transaction of two inserts)
 *   process-document+postgres    the same, wrapped for the response only (withIdempotency, default store)
 *   process-document+transactional    as deployed: withIdempotentTransaction, separate asynchronous claim
 *   process-document+in-transaction   the same with the claim inside the handler's transaction
 */
import { createJwtVerifier } from "../gateway/jwt.ts";
import { createGatewayHandler, type DeployedFunction } from "../gateway/server.ts";
import processDocumentDeployed, {
  bareHandler as processDocument,
  work as processDocumentWork,
} from "../../supabase/functions/process-document/index.ts";
import { closeDb } from "../../supabase/functions/_shared/db.ts";
import {
  closeDefaultStore,
  type Handler,
  MemoryStore,
  PostgresStore,
  withIdempotency,
  withIdempotentTransaction,
} from "../../supabase/functions/_shared/idempotency.ts";
import type { IdempotencyStore } from "../../supabase/functions/_shared/idempotency/store.ts";
import {
  LayeredStore,
  RedisFrontCache,
  RedisStore,
} from "../../supabase/functions/_shared/idempotency/redis.ts";
import { JWT_SECRET } from "../../tests/support/jwt.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";
// the function reads its database URL from the environment, as on Supabase
Deno.env.set("SUPABASE_DB_URL", DB_URL);

const echo: Handler = () => Response.json({ ok: true, at: "bench" }, { status: 201 });

function deploy(stores: Record<string, IdempotencyStore>): Map<string, DeployedFunction> {
  const wrap = (handler: Handler, name: string, store: IdempotencyStore): DeployedFunction => ({
    handler: withIdempotency(handler, { functionName: `bench-${name}`, store }),
    verifyJwt: true,
  });
  const fns = new Map<string, DeployedFunction>([
    ["echo", { handler: echo, verifyJwt: true }],
    ["process-document", { handler: processDocument, verifyJwt: true }],
    // the default store, as deployed: a PostgresStore on the isolate's one pool, shared with the function
    [
      "process-document+postgres",
      {
        handler: withIdempotency(processDocument, { functionName: "bench-process-document" }),
        verifyJwt: true,
      },
    ],
    // transactional mode as deployed (separate asynchronous claim), and with the claim in the transaction
    ["process-document+transactional", { handler: processDocumentDeployed.fetch, verifyJwt: true }],
    [
      "process-document+in-transaction",
      {
        handler: withIdempotentTransaction(processDocumentWork, {
          functionName: "bench-process-document-in-tx",
          claim: "in-transaction",
        }),
        verifyJwt: true,
      },
    ],
  ]);
  for (const [name, store] of Object.entries(stores)) fns.set(`echo+${name}`, wrap(echo, "echo", store));
  return fns;
}

const stores = {
  postgres: new PostgresStore({ url: DB_URL }),
  redis: new RedisStore({ url: REDIS_URL, prefix: `bench:${crypto.randomUUID()}:` }),
  memory: new MemoryStore(),
  // Postgres holds every claim; Redis in front answers replays and in-flight checks
  layered: new LayeredStore({
    back: new PostgresStore({ url: DB_URL }),
    front: new RedisFrontCache({ url: REDIS_URL, prefix: `bench-front:${crypto.randomUUID()}:` }),
  }),
};
const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(`listening ${port}`) },
  createGatewayHandler({ functions: deploy(stores), verifier: await createJwtVerifier(JWT_SECRET) }),
);
Deno.addSignalListener("SIGTERM", async () => {
  await server.shutdown();
  await Promise.allSettled([closeDefaultStore(), closeDb(), ...Object.values(stores).map((s) => s.close())]);
  Deno.exit(0);
});
