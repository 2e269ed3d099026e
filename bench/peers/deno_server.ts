/**
 * This toolkit in the peers benchmark: `withIdempotency` around the same trivial handler as the Node peers,
 * with the in-memory, Redis and Postgres stores, served by `Deno.serve` next to a bare route (the Deno
 * baseline). Keys are in the shared scope (no JWT: the peers have no users either) and CORS is off (the
 * peers add none); everything else is the default, so a duplicate in flight gets 409 with Retry-After.
 * The `-wait` routes use `onInFlight: "wait"`.
 *
 *   POST /<scenario>/fast | /<scenario>/slow (50 ms)   GET /__runs   POST /__reset
 *
 * Started by run.mjs; prints `listening <port>`; reads SUPABASE_DB_URL and REDIS_URL.
 */
import { MemoryStore, PostgresStore, withIdempotency } from "../../supabase/functions/_shared/idempotency.ts";
import type { IdempotencyStore } from "../../supabase/functions/_shared/idempotency/store.ts";
import { RedisStore } from "../../supabase/functions/_shared/idempotency/redis.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:54380";
const runs: Record<string, number> = {};

/** The trivial handler: reads the JSON body as the Node routes do, counts its run, waits, answers. */
function work(route: string, ms: number) {
  return async (req: Request): Promise<Response> => {
    await req.json();
    runs[route] = (runs[route] ?? 0) + 1;
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    return Response.json({ ok: true, route, at: Date.now() }, { status: 201 });
  };
}

const stores: Record<string, IdempotencyStore> = {
  memory: new MemoryStore({ maxEntries: 1_000_000 }),
  redis: new RedisStore({ url: REDIS_URL, prefix: `bench:${crypto.randomUUID()}:` }),
  postgres: new PostgresStore({ url: DB_URL }),
};
const routes = new Map<string, (req: Request) => Promise<Response> | Response>();
for (const [speed, ms] of Object.entries({ fast: 0, slow: 50 })) {
  routes.set(`/bare/${speed}`, work(`bare/${speed}`, ms));
  for (const [name, store] of Object.entries(stores)) {
    for (const onInFlight of ["reject", "wait"] as const) {
      const route = `toolkit-${name}${onInFlight === "wait" ? "-wait" : ""}/${speed}`;
      routes.set(
        `/${route}`,
        withIdempotency(work(route, ms), {
          functionName: `bench-peers-${name}`,
          store,
          getUserId: () => null,
          anonymous: "shared",
          cors: false,
          onInFlight,
        }),
      );
    }
  }
}

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(`listening ${port}`) },
  (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/__runs") return Response.json(runs);
    if (path === "/__reset") {
      for (const name of Object.keys(runs)) delete runs[name];
      return Response.json({ ok: true });
    }
    const route = routes.get(path);
    return route ? route(req) : new Response("not found", { status: 404 });
  },
);
Deno.addSignalListener("SIGTERM", async () => {
  await server.shutdown();
  await Promise.allSettled(Object.values(stores).map((s) => s.close()));
  Deno.exit(0);
});
