/**
 * The admin CLI (`deno task admin`) against the real database: every command, its JSON and text output, the
 * confirmation of destructive commands, a clear error for every bad argument, and the SQL functions'
 * privileges (service role only).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { parseArgs, UsageError } from "../../scripts/admin/args.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const CLI = new URL("../../scripts/admin.ts", import.meta.url).pathname;
const FP = "f".repeat(64);

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

async function cli(...args: string[]): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", CLI, ...args],
    env: { SUPABASE_DB_URL: DB_URL, NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  let json: unknown = null;
  try {
    json = JSON.parse(stdout);
  } catch {
    // text output
  }
  return { code: out.code, stdout, stderr: new TextDecoder().decode(out.stderr), json };
}

Deno.test("admin CLI: every bad argument is a clear usage error", () => {
  const bad: [string[], RegExp][] = [
    [["frobnicate"], /unknown command "frobnicate"/],
    [["list", "--status", "done"], /--status must be one of processing, completed, failed/],
    [["list", "--status", "completed", "--stuck"], /--stuck keys are processing/],
    [["list", "--limit", "0"], /--limit must be a whole number from 1 to 10000/],
    [["list", "--limit"], /--limit needs a value/],
    [["list", "--nope"], /unknown option --nope/],
    [["list", "extra"], /unexpected argument "extra"/],
    [["list", "--stuck=yes"], /--stuck takes no value/],
    [["list", "--function", "a", "--function", "b"], /--function given twice/],
    [["list", "--function", "bad/name"], /--function must be 1-128/],
    [["inspect"], /give exactly one key/],
    [["inspect", "a b"], /is not a valid key/],
    [["inspect", "key-1", "--user", "bob"], /--user must be a uuid/],
    [["release-stuck"], /--older-than is required/],
    [["release-stuck", "--older-than", "15"], /must be a number and a unit/],
    [["release-stuck", "--older-than", "2w"], /must be a number and a unit/],
    [["purge"], /exactly one of --user or --function/],
    [["purge", "--user", crypto.randomUUID(), "--function", "f"], /exactly one of --user or --function/],
    [["cleanup", "--batch-size", "-5"], /--batch-size needs a value|--batch-size must be a whole number/],
    [["cleanup", "--max-batches", "1.5"], /--max-batches must be a whole number/],
  ];
  for (const [args, message] of bad) {
    assert.throws(
      () => parseArgs(args),
      (e: unknown) => e instanceof UsageError && message.test(e.message),
      args.join(" "),
    );
  }
  assert.deepEqual(parseArgs(["release-stuck", "--older-than=90s", "--yes"]).command, {
    name: "release-stuck",
    olderThan: "90 seconds",
    reason: "released with the admin CLI",
    function: null,
  });
});

Deno.test("admin CLI: a bad argument exits 2 with the error on stderr (JSON with --json), and touches nothing", async () => {
  const text = await cli("list", "--status", "done");
  assert.equal(text.code, 2);
  assert.match(text.stderr, /^error: list: --status must be one of/);
  const json = await cli("purge", "--json");
  assert.equal(json.code, 2);
  assert.equal(JSON.parse(json.stderr).error.code, "USAGE");
  const help = await cli("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /release-stuck --older-than DURATION/);
});

Deno.test("admin CLI: inspect, list, release-stuck, purge, stats and cleanup on real rows", async () => {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const fn = `admin-${crypto.randomUUID().slice(0, 8)}`;
  const [u1, u2] = [crypto.randomUUID(), crypto.randomUUID()];
  await sql`insert into auth.users ${sql([u1, u2].map((id) => ({ id, email: `admin-${id}@test.local` })))}`;
  const processing = (key: string, startedAgo: string, leaseEnds: string) =>
    sql`insert into public.idempotency_keys
          (idempotency_key, user_id, function_name, request_fingerprint, status, lease_token, locked_until,
           started_at, created_at, expires_at)
        values (${key}, ${u1}, ${fn}, ${FP}, 'processing', gen_random_uuid(), now() + ${leaseEnds}::interval,
          now() - ${startedAgo}::interval, now() - ${startedAgo}::interval, now() + interval '1 day')`;
  const finished = (key: string, user: string, status: string, expiresIn = "1 day") =>
    sql`insert into public.idempotency_keys
          (idempotency_key, user_id, function_name, request_fingerprint, status, status_code, response,
           response_headers, completed_at, created_at, expires_at)
        values (${key}, ${user}, ${fn}, ${FP}, ${status}, 201, '\\x7b7d'::bytea, '{"content-type":"application/json"}',
          now(), now() - interval '2 days', now() + ${expiresIn}::interval)`;
  // the every-minute cleanup job would delete k-expired before the CLI's cleanup, and before stats count it
  const [job] = await sql<{ jobid: number }[]>`
    select jobid from cron.job where jobname = 'cleanup-expired-idempotency-keys'`;
  await sql`select cron.alter_job(${job!.jobid}, active => false)`;
  try {
    await processing("k-stuck-old", "20 minutes", "-10 minutes");
    await processing("k-stuck-new", "30 seconds", "-10 seconds");
    await processing("k-live", "20 minutes", "10 minutes");
    await finished("k-done", u1, "completed");
    await finished("k-failed", u1, "failed");
    await finished("k-other", u2, "completed");
    await finished("k-expired", u1, "completed", "-1 hour");

    // inspect: every column but the secrets
    const inspected = await cli("inspect", "k-done", "--function", fn, "--json");
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.equal(inspected.json.length, 1);
    const row = inspected.json[0];
    assert.equal(row.idempotency_key, "k-done");
    assert.equal(row.status, "completed");
    assert.equal(row.response_bytes, 2);
    for (const secret of ["lease_token", "response", "response_headers", "request_fingerprint"]) {
      assert.ok(!(secret in row), `inspect shows ${secret}`);
    }
    assert.match((await cli("inspect", "k-done", "--function", fn)).stdout, /^idempotency_key\s+k-done$/m);
    assert.match((await cli("inspect", "no-such-key")).stdout, /no key "no-such-key"/);

    // list
    const stuck = await cli("list", "--function", fn, "--stuck", "--json");
    assert.deepEqual(stuck.json.map((r: { idempotency_key: string }) => r.idempotency_key).sort(), [
      "k-stuck-new",
      "k-stuck-old",
    ]);
    const completed = await cli("list", "--function", fn, "--status", "completed", "--json");
    assert.deepEqual(completed.json.map((r: { idempotency_key: string }) => r.idempotency_key).sort(), [
      "k-done",
      "k-expired",
      "k-other",
    ]);
    assert.match(
      (await cli("list", "--function", fn, "--limit", "2")).stdout,
      /^id\s+function_name\s+idempotency_key/,
    );

    // release-stuck: refused without --yes (no terminal), then only the old one, with the reason recorded
    const refused = await cli("release-stuck", "--older-than", "5m", "--function", fn);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /would release 1 stuck key\(s\).*add --yes/);
    const released = await cli(
      "release-stuck",
      "--older-than",
      "5m",
      "--function",
      fn,
      "--reason",
      "worker OOM",
      "--yes",
      "--json",
    );
    assert.equal(released.code, 0, released.stderr);
    assert.equal(released.json.released, 1);
    const [old] = await sql<
      { status: string; error_message: string; reason: string; lease_token: string | null }[]
    >`
      select status, error_message, metadata->'released'->>'reason' as reason, lease_token
      from public.idempotency_keys where idempotency_key = 'k-stuck-old' and user_id = ${u1}`;
    assert.deepEqual(old, {
      status: "failed",
      error_message: "released by an operator: worker OOM",
      reason: "worker OOM",
      lease_token: null,
    });
    const [retry] = await sql<{ outcome: string; attempt_count: number }[]>`
      select outcome, attempt_count from public.idempotency_begin('k-stuck-old', ${u1}::uuid, ${fn}, ${FP}, 60, 30)`;
    assert.deepEqual(retry, { outcome: "started", attempt_count: 2 }, "a retry of a released key runs again");
    const [young] = await sql<{ status: string }[]>`
      select status from public.idempotency_keys where idempotency_key = 'k-stuck-new'`;
    assert.equal(young?.status, "processing", "younger than --older-than: left alone");

    // stats, text and JSON
    const stats = await cli("stats", "--json");
    const mine = stats.json.find((r: { function_name: string }) => r.function_name === fn);
    assert.equal(Number(mine.total), 7);
    assert.match((await cli("stats")).stdout, /^function_name\s+total\s+processing/);

    // purge a user: refused without --yes, then done
    assert.equal((await cli("purge", "--user", u2)).code, 2);
    assert.equal((await sql`select 1 from public.idempotency_keys where user_id = ${u2}`).length, 1);
    const purgedUser = await cli("purge", "--user", u2, "--yes", "--json");
    assert.deepEqual(purgedUser.json, { deleted: 1, kept_under_live_lease: 0 });

    // cleanup deletes the expired row
    const cleaned = await cli("cleanup", "--json");
    assert.equal(cleaned.code, 0, cleaned.stderr);
    assert.ok(cleaned.json.deleted >= 1);
    assert.equal(
      (await sql`select 1 from public.idempotency_keys where idempotency_key = 'k-expired'`).length,
      0,
    );

    // purge a function: everything but the key under a live lease (and the retry just started above)
    const purgedFn = await cli("purge", "--function", fn, "--yes", "--json");
    assert.deepEqual(purgedFn.json, { deleted: 3, kept_under_live_lease: 2 });
    const left = await sql<{ idempotency_key: string }[]>`
      select idempotency_key from public.idempotency_keys where function_name = ${fn} order by 1`;
    assert.deepEqual(left.map((r) => r.idempotency_key), ["k-live", "k-stuck-old"]);

    // a database failure is exit 1 with the error, not a usage error
    const down = await cli(
      "stats",
      "--db-url",
      "postgresql://postgres:postgres@127.0.0.1:1/postgres",
      "--json",
    );
    assert.equal(down.code, 1);
    assert.equal(JSON.parse(down.stderr).error.code, "DATABASE");
  } finally {
    await sql`select cron.alter_job(${job!.jobid}, active => true)`;
    await sql`delete from auth.users where id = any(${[u1, u2]}::uuid[])`;
    await sql.end();
  }
});

Deno.test("admin SQL functions: service role only", async () => {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    for (const role of ["anon", "authenticated"]) {
      for (
        const call of [
          "select public.idempotency_admin_list()",
          "select public.idempotency_admin_inspect('k')",
          "select public.idempotency_admin_release_stuck(interval '1 minute', 'x')",
          "select public.idempotency_admin_purge_function('f')",
          "select public.idempotency_admin_purge_user(gen_random_uuid())",
          "select public.idempotency_metrics_add('{f}', '{outcomes_total}', '{started}', '{1}')",
          "select * from public.idempotency_metric_counters",
        ]
      ) {
        await assert.rejects(
          sql.begin(async (tx) => {
            await tx.unsafe(`set local role ${role}`);
            await tx.unsafe(call);
          }),
          /permission denied/,
          `${role}: ${call}`,
        );
      }
    }
    const rows = await sql.begin(async (tx) => {
      await tx.unsafe("set local role service_role");
      return await tx.unsafe("select count(*) from public.idempotency_admin_list(null, null, false, 1)");
    });
    assert.equal(rows.length, 1);
  } finally {
    await sql.end();
  }
});
