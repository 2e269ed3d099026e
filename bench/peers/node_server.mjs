// The peers, served by one Express app in Node as a Node user would wire each of them: a bare route (the
// baseline), AWS Powertools idempotency with its Redis (cache) persistence layer called outside Lambda,
// @node-idempotency/core with its memory and Redis adapters, and express-idempotency (its in-memory
// adapter, the only one it ships). Every route runs the same trivial handler.
//
//   POST /<peer>/fast   the handler answers at once      POST /<peer>/slow   the handler takes 50 ms
//   GET /__runs         handler runs per route           POST /__reset      zero the counters
//
// Started by run.mjs; prints `listening <port>`; REDIS_URL names the Redis server.
import express from "express";
import { createClient } from "@redis/client";
import { IdempotencyConfig, makeIdempotent } from "@aws-lambda-powertools/idempotency";
import { CachePersistenceLayer } from "@aws-lambda-powertools/idempotency/cache";
import { Idempotency, IdempotencyError } from "@node-idempotency/core";
import { MemoryStorageAdapter } from "@node-idempotency/storage-adapter-memory";
import { RedisStorageAdapter } from "@node-idempotency/storage-adapter-redis";
import { getSharedIdempotencyService, idempotency as expressIdempotency } from "express-idempotency";

// Powertools warns on every call made outside Lambda ("Could not determine remaining time left"): that is
// the situation measured here, so the line is dropped rather than printed thousands of times.
const warn = console.warn.bind(console);
console.warn = (...args) => {
  if (!String(args[0]).includes("Could not determine remaining time left")) warn(...args);
};

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:54380";
const RUN = process.env.BENCH_RUN ?? String(Date.now());
const runs = {};

/** The trivial handler every library wraps: counts its run, waits `ms`, answers a small JSON body. */
async function work(route, ms) {
  runs[route] = (runs[route] ?? 0) + 1;
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
  return { ok: true, route, at: Date.now() };
}

const speeds = { fast: 0, slow: 50 };
const app = express();
app.use(express.json());
app.get("/__runs", (_req, res) => res.json(runs));
app.post("/__reset", (_req, res) => {
  for (const name of Object.keys(runs)) delete runs[name];
  res.json({ ok: true });
});

const powertoolsClient = await createClient({ url: REDIS_URL }).connect();
const redisAdapter = new RedisStorageAdapter({ url: REDIS_URL });
await redisAdapter.connect();

for (const [speed, ms] of Object.entries(speeds)) {
  // the baseline
  app.post(`/bare/${speed}`, async (_req, res) => res.status(201).json(await work(`bare/${speed}`, ms)));

  // AWS Powertools: makeIdempotent around the work, keyed by the header; `powertools-redis` validates the
  // payload (the body), as this toolkit always does; `powertools-redis-novalidate` is its default config.
  for (
    const [name, validation] of [["powertools-redis", { payloadValidationJmesPath: "body" }], [
      "powertools-redis-novalidate",
      {},
    ]]
  ) {
    const route = `${name}/${speed}`;
    const powertools = makeIdempotent(() => work(route, ms), {
      persistenceStore: new CachePersistenceLayer({ client: powertoolsClient }),
      config: new IdempotencyConfig({ eventKeyJmesPath: "key", ...validation }),
      keyPrefix: `bench-${RUN}-${route}`,
    });
    app.post(`/${route}`, async (req, res) => {
      try {
        res.status(201).json(await powertools({ key: req.get("idempotency-key"), body: req.body }));
      } catch (error) {
        const status = error?.name === "IdempotencyAlreadyInProgressError"
          ? 409
          : error?.name === "IdempotencyValidationError"
          ? 422
          : 500;
        res.status(status).json({ error: { code: error?.name ?? "Error", message: String(error?.message) } });
      }
    });
  }

  // @node-idempotency/core: onRequest before the work, onResponse after it, as its docs describe.
  for (const [name, storage] of [["memory", new MemoryStorageAdapter()], ["redis", redisAdapter]]) {
    const route = `node-idempotency-${name}/${speed}`;
    const idempotency = new Idempotency(storage, { cacheKeyPrefix: `bench-${RUN}` });
    app.post(`/${route}`, async (req, res) => {
      const request = { headers: req.headers, path: req.path, body: req.body, method: req.method };
      try {
        const cached = await idempotency.onRequest(request);
        if (cached) {
          return res.status(cached.additional?.status ?? 200).set("x-replay", "true").json(cached.body);
        }
      } catch (error) {
        const status = error instanceof IdempotencyError
          ? error.code === "REQUEST_IN_PROGRESS"
            ? 409
            : error.code === "IDEMPOTENCY_FINGERPRINT_MISSMATCH"
            ? 422
            : 400
          : 500;
        return res.status(status).json({
          error: { code: error?.code ?? "Error", message: String(error?.message) },
        });
      }
      const body = await work(route, ms);
      await idempotency.onResponse(request, { body, additional: { status: 201 } });
      res.status(201).json(body);
    });
  }

  // express-idempotency: its middleware, and the hit check its README asks every handler to make.
  app.post(`/express-idempotency/${speed}`, expressIdempotency(), async (req, res) => {
    if (getSharedIdempotencyService().isHit(req)) return;
    res.status(201).json(await work(`express-idempotency/${speed}`, ms));
  });
}

const server = app.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
server.keepAliveTimeout = 60_000;
process.on("SIGTERM", () => server.close(() => process.exit(0)));
