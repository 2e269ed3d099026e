/**
 * idempotency-metrics: the Prometheus text endpoint of the idempotency toolkit. Service role only.
 *
 *   GET /functions/v1/idempotency-metrics   Authorization: Bearer <service_role key>
 *   → 200 text/plain; version=0.0.4: outcome counters and latency histograms summed over every instance
 *     (idempotency_metric_counters), gauges from v_idempotency_stats, the last successful cleanup run
 *
 * The database answers every scrape, so any instance serves the same totals. When it does not answer, the
 * scrape still succeeds with `idempotency_store_up 0`, which the "store unavailable" alert watches.
 */

// deno-lint-ignore no-import-prefix -- functions pin npm packages by full specifier (deploy convention)
import postgres from "npm:postgres@3.4.9";
import { bearerToken, decodeJwtClaimsUnverified, verifyHs256Jwt } from "../_shared/idempotency/auth.ts";
import {
  type CounterRow,
  type MetricsSnapshot,
  renderPrometheus,
  type StatsRow,
} from "../_shared/idempotency/metrics.ts";

/** The one pool of this isolate, opened by the first scrape. */
let pool: postgres.Sql | undefined;

function database(): postgres.Sql {
  const url = Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set");
  pool ??= postgres(url, {
    max: 1,
    prepare: new URL(url).port !== "6543",
    connect_timeout: 3,
    idle_timeout: 60,
    onnotice: () => {},
    connection: { application_name: "idempotency-metrics" },
  });
  return pool;
}

function problem(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return Response.json({ error: { code, message } }, { status, headers });
}

/** `null` when the caller holds the service role key; else the refusal. */
function refuseUnlessServiceRole(req: Request): Response | null {
  const token = bearerToken(req);
  if (token === null) {
    return problem(
      401,
      "AUTH_REQUIRED",
      "send Authorization: Bearer <service_role key>",
    );
  }
  const secret = Deno.env.get("SUPABASE_JWT_SECRET");
  let claims: Record<string, unknown>;
  try {
    // without a secret here, the gateway has verified the token (verify_jwt = true in config.toml)
    claims = secret ? verifyHs256Jwt(token, secret) : decodeJwtClaimsUnverified(token);
  } catch {
    return problem(401, "AUTH_REQUIRED", "the bearer token is not a valid JWT");
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
    return problem(401, "AUTH_REQUIRED", "the token has expired");
  }
  if (claims.role !== "service_role") {
    return problem(403, "FORBIDDEN", "metrics are for the service role only");
  }
  return null;
}

async function snapshot(): Promise<MetricsSnapshot> {
  try {
    const sql = database();
    const [counters, stats, cleanup] = await Promise.all([
      sql<
        CounterRow[]
      >`select function_name, metric, label, value from public.idempotency_metric_counters`,
      sql<StatsRow[]>`select * from public.v_idempotency_stats`,
      sql<{ at: number | null }[]>`
        select extract(epoch from max(d.end_time))::float8 as at
        from cron.job_run_details d join cron.job j using (jobid)
        where j.jobname = 'cleanup-expired-idempotency-keys' and d.status = 'succeeded'`
        .catch(() => []),
    ]);
    return {
      counters,
      stats,
      storeUp: true,
      lastCleanupSuccess: cleanup[0]?.at ?? null,
    };
  } catch (error) {
    console.error("[idempotency-metrics] the database did not answer", error);
    return { counters: [], stats: [], storeUp: false };
  }
}

/** Serves one scrape. */
async function fetch(req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return problem(405, "METHOD_NOT_ALLOWED", "use GET", {
      allow: "GET, HEAD",
    });
  }
  const refusal = refuseUnlessServiceRole(req);
  if (refusal) return refusal;
  const body = renderPrometheus(await snapshot());
  return new Response(req.method === "HEAD" ? null : body, {
    headers: {
      "content-type": "text/plain; version=0.0.4; charset=utf-8",
      "cache-control": "no-store",
    },
  });
}

export default { fetch } satisfies Deno.ServeDefaultExport;
