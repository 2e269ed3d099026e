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

import { type Caller, createJwtCallerResolver } from "../_shared/idempotency/auth.ts";
import { errorResponse, IdempotencyError } from "../_shared/idempotency/errors.ts";
import { bearerToken } from "../_shared/idempotency/jwt.ts";
import { sharedPool } from "../_shared/idempotency/pool.ts";
import {
  type CounterRow,
  type MetricsSnapshot,
  renderPrometheus,
  type StatsRow,
} from "../_shared/idempotency/metrics.ts";

function problem(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return Response.json({ error: { code, message } }, { status, headers });
}

/** Verifies HS256 tokens with the legacy secret and ES256/RS256 ones with the project's JWKS. */
const resolveCaller = createJwtCallerResolver();

/** `null` when the caller holds the service role key; else the refusal. */
async function refuseUnlessServiceRole(req: Request): Promise<Response | null> {
  if (bearerToken(req) === null) {
    return problem(401, "AUTH_REQUIRED", "send Authorization: Bearer <service_role key>");
  }
  let caller: Caller;
  try {
    caller = await resolveCaller(req);
  } catch (error) {
    if (error instanceof IdempotencyError) return errorResponse(error);
    throw error;
  }
  return caller.kind === "service"
    ? null
    : problem(403, "FORBIDDEN", "metrics are for the service role only");
}

async function snapshot(): Promise<MetricsSnapshot> {
  try {
    const sql = sharedPool();
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
  const refusal = await refuseUnlessServiceRole(req);
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
