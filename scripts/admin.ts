/**
 * The idempotency admin CLI, over the service-role SQL functions of
 * supabase/migrations/20261130000500_idempotency_operations.sql.
 *
 *   deno task admin <inspect|list|release-stuck|purge|stats|cleanup> [options] [--json] [--db-url URL]
 *
 * `deno task admin --help` prints every option. Exit codes: 0 done, 1 the database refused or failed (or the
 * operator declined), 2 a bad command line or a destructive command without confirmation.
 */
import postgres from "postgres";
import { type Command, type Invocation, parseArgs, USAGE, UsageError } from "./admin/args.ts";
import { renderTable } from "./admin/table.ts";

type Row = Record<string, unknown>;

/** What one run printed and how it ends. */
interface Outcome {
  /** JSON output (with `--json`). */
  data: unknown;
  /** Human output. */
  text: string;
}

async function run(sql: postgres.Sql, inv: Invocation): Promise<Outcome> {
  const { command } = inv;
  switch (command.name) {
    case "inspect": {
      const rows = (await sql<{ row: Row }[]>`
        select r as row from public.idempotency_admin_inspect(${command.key}, ${command.user}::uuid, ${command.function}) r`)
        .map((r) => r.row);
      const text = rows.length === 0
        ? `no key "${command.key}"`
        : rows.map((row) => Object.entries(row).map(([k, v]) => `${k.padEnd(18)} ${show(v)}`).join("\n"))
          .join("\n\n");
      return { data: rows, text };
    }
    case "list": {
      const rows = (await sql<{ row: Row }[]>`
        select r as row
        from public.idempotency_admin_list(${command.status}, ${command.function}, ${command.stuck}, ${command.limit}) r`)
        .map((r) => r.row);
      const columns = [
        "id",
        "function_name",
        "idempotency_key",
        "user_id",
        "status",
        "status_code",
        "attempt_count",
        "created_at",
        "locked_until",
      ];
      return { data: rows, text: rows.length === 0 ? "no keys" : renderTable(columns, rows) };
    }
    case "release-stuck": {
      const [preview] = await sql<{ n: number }[]>`
        select count(*)::int as n from public.idempotency_admin_list('processing', ${command.function}, true, 10000) r
        where (r->>'started_at')::timestamptz < now() - ${command.olderThan}::interval`;
      confirm(
        inv,
        `release ${preview?.n ?? 0} stuck key(s) started more than ${command.olderThan} ago`,
      );
      const rows = (await sql<{ row: Row }[]>`
        select r as row
        from public.idempotency_admin_release_stuck(${command.olderThan}::interval, ${command.reason}, ${command.function}) r`)
        .map((r) => r.row);
      return {
        data: { released: rows.length, rows },
        text: `released ${rows.length} key(s): their retries run again (reason: ${command.reason})`,
      };
    }
    case "purge": {
      const [preview] = command.user
        ? await sql<
          { n: number }[]
        >`select count(*)::int as n from public.idempotency_keys where user_id = ${command.user}::uuid`
        : await sql<
          { n: number }[]
        >`select count(*)::int as n from public.idempotency_keys where function_name = ${command.function}`;
      const target = command.user ? `user ${command.user}` : `function ${command.function}`;
      confirm(inv, `delete up to ${preview?.n ?? 0} key(s) of ${target}`);
      const [row] = command.user
        ? await sql<{ n: string }[]>`select public.idempotency_admin_purge_user(${command.user}::uuid) as n`
        : await sql<
          { n: string }[]
        >`select public.idempotency_admin_purge_function(${command.function}) as n`;
      const deleted = Number(row?.n ?? 0);
      const kept = (preview?.n ?? 0) - deleted;
      return {
        data: { deleted, kept_under_live_lease: kept },
        text: `deleted ${deleted} key(s) of ${target}` +
          (kept > 0 ? `; kept ${kept} under a live lease` : ""),
      };
    }
    case "stats": {
      const rows = await sql<Row[]>`
        select function_name, total, processing, completed, failed, replays, in_flight, stuck,
          expired_pending_cleanup, median_processing_ms, p95_processing_ms
        from public.v_idempotency_stats order by function_name = '*', function_name`;
      return { data: rows, text: rows.length === 0 ? "no keys" : renderTable(Object.keys(rows[0]!), rows) };
    }
    case "cleanup": {
      const [row] = await sql<{ n: string }[]>`
        select public.cleanup_expired_idempotency_keys(${command.batchSize}, ${command.maxBatches}) as n`;
      const deleted = Number(row?.n ?? 0);
      return { data: { deleted }, text: `deleted ${deleted} expired key(s)` };
    }
    case "help":
      return { data: { usage: USAGE }, text: USAGE };
  }
}

/** Declined or unconfirmable: the CLI stops before changing anything. */
class NotConfirmed extends Error {}

/**
 * Asks the operator to type `yes`, unless `--yes` was given. Without a terminal there is no one to ask: the
 * command is refused, so a script never deletes by accident.
 */
function confirm(inv: Invocation, what: string): void {
  if (inv.yes) return;
  if (!Deno.stdin.isTerminal()) {
    throw new UsageError(`${inv.command.name} would ${what}: add --yes to confirm (no terminal to ask)`);
  }
  const answer = prompt(`${inv.command.name} will ${what}. Type "yes" to go on:`);
  if (answer?.trim() !== "yes") throw new NotConfirmed("not confirmed: nothing was changed");
}

function show(value: unknown): string {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

async function main(args: string[]): Promise<number> {
  let inv: Invocation;
  try {
    inv = parseArgs(args);
  } catch (error) {
    return fail(args.includes("--json"), error, 2);
  }
  if (inv.command.name === "help") {
    console.log(USAGE);
    return 0;
  }
  const url = inv.dbUrl ?? Deno.env.get("SUPABASE_DB_URL");
  if (!url) return fail(inv.json, new UsageError("no database: set SUPABASE_DB_URL or pass --db-url"), 2);
  const sql = postgres(url, {
    max: 1,
    connect_timeout: 5,
    onnotice: () => {},
    prepare: new URL(url).port !== "6543",
  });
  try {
    const outcome = await run(sql, inv);
    console.log(inv.json ? JSON.stringify(outcome.data, null, 2) : outcome.text);
    return 0;
  } catch (error) {
    return fail(inv.json, error, error instanceof UsageError ? 2 : 1);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function fail(json: boolean, error: unknown, code: number): number {
  const message = error instanceof Error ? error.message : String(error);
  const kind = error instanceof UsageError
    ? "USAGE"
    : error instanceof NotConfirmed
    ? "NOT_CONFIRMED"
    : "DATABASE";
  console.error(json ? JSON.stringify({ error: { code: kind, message } }) : `error: ${message}`);
  if (error instanceof UsageError && !json) console.error("run `deno task admin --help` for usage");
  return code;
}

export type { Command };

if (import.meta.main) Deno.exit(await main(Deno.args));
