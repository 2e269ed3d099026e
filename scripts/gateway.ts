/**
 * The local functions gateway, what `supabase functions serve` gives: one Deno process on
 * 127.0.0.1:$PORT serving `/functions/v1/<name>` from each function's exported handler, checking JWTs where
 * supabase/config.toml says `verify_jwt = true`, answering CORS preflights, and `GET /health`.
 *
 *   deno run --allow-all scripts/gateway.ts
 *
 * Environment: PORT (default 54321), SUPABASE_JWT_SECRET (required when a function verifies JWTs),
 * JWT_SIGNING_KEY_FILE (the stack's ES256 key, made on first start; its JWKS is served at
 * /auth/v1/.well-known/jwks.json and ES256 tokens are verified through SUPABASE_URL), and
 * whatever the functions read themselves (SUPABASE_URL, SUPABASE_DB_URL, SUPABASE_ANON_KEY,
 * SUPABASE_SERVICE_ROLE_KEY), which they get from this process's environment. Everything is read once at
 * start: no request touches the file system. SIGTERM or SIGINT stops it after in-flight requests finish.
 */

import { parseFunctionSettings } from "./gateway/config.ts";
import { loadFunctions } from "./gateway/discover.ts";
import { createJwtVerifier, loadSigningKey } from "./gateway/jwt.ts";
import { createGatewayHandler } from "./gateway/server.ts";
import { JWKS_PATH } from "../supabase/functions/_shared/idempotency/jwt.ts";
import { createTrainerHandler } from "./trainer.ts";
import { closeDb } from "../supabase/functions/_shared/db.ts";
import { closeDefaultStore } from "../supabase/functions/_shared/idempotency.ts";
import { postgresDefectsCaught } from "../supabase/functions/_shared/idempotency/_postgres_client.ts";

const SUPABASE_DIR = new URL("../supabase/", import.meta.url);

/** The simulated external trainer (scripts/trainer.ts) under /trainer, as start-training's TRAINER_URL. */
function withTrainer(
  gateway: (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>,
): (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response> {
  const trainer = createTrainerHandler();
  return (req, info) => new URL(req.url).pathname.startsWith("/trainer/") ? trainer(req) : gateway(req, info);
}

async function main(): Promise<void> {
  const port = Number(Deno.env.get("PORT") ?? "54321");
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT is not a port: ${port}`);

  const settings = parseFunctionSettings(await Deno.readTextFile(new URL("config.toml", SUPABASE_DIR)));
  const functions = await loadFunctions(new URL("functions/", SUPABASE_DIR), settings);
  const secret = Deno.env.get("SUPABASE_JWT_SECRET");
  const needsJwt = [...functions.values()].some((f) => f.verifyJwt);
  if (needsJwt && !secret) {
    throw new Error("SUPABASE_JWT_SECRET is not set and a function has verify_jwt = true");
  }
  // The stack's asymmetric signing key: its JWKS is served here and verified through SUPABASE_URL, as on
  // a Supabase project with signing keys.
  const keyFile = Deno.env.get("JWT_SIGNING_KEY_FILE");
  const signingKey = keyFile ? await loadSigningKey(keyFile) : undefined;
  const supabaseUrl = Deno.env.get("SUPABASE_URL");
  const jwksUrl = signingKey && supabaseUrl ? `${supabaseUrl.replace(/\/+$/, "")}${JWKS_PATH}` : undefined;
  const verifier = secret ? await createJwtVerifier(secret, undefined, jwksUrl ? { jwksUrl } : {}) : null;

  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port,
      onListen: ({ hostname, port }) => {
        const list = [...functions].map(([name, f]) => `${name}${f.verifyJwt ? "" : " (no JWT check)"}`);
        console.log(`functions gateway on http://${hostname}:${port}/functions/v1/: ${list.join(", ")}`);
      },
    },
    withTrainer(
      createGatewayHandler({ functions, verifier, ...(signingKey ? { jwks: signingKey.jwks } : {}) }),
    ),
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: finishing in-flight requests, then stopping`);
    await server.shutdown();
    await Promise.allSettled([closeDb(), closeDefaultStore()]);
    // Read by tests/faults: how often the postgres.js defect guard kept this process alive.
    console.log(`postgres driver defects cancelled: ${JSON.stringify(postgresDefectsCaught())}`);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
  await server.finished;
}

if (import.meta.main) {
  try {
    await main();
  } catch (error) {
    console.error(`the functions gateway could not start: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
