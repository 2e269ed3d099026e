/**
 * Soak run (not in CI): mixed traffic over real HTTP against a wrapped handler with the Postgres store, on the
 * durable cluster of scripts/scale/cluster.sh, for SOAK_MINUTES (default 30) at about SOAK_RPS requests per
 * second (default 40), while pg_cron runs the cleanup every minute. The handler's side effect is one row in
 * soak_effects per run. Traffic, per operation:
 *   new key (50 %), a retry of an acknowledged key (25 %), three concurrent copies of a new key (8 %),
 *   a key whose first run fails with a 500 and whose retry succeeds (7 %), a key of a function with a 3 s TTL
 *   sent again after it expired, so it runs again (10 %).
 * The server runs in a process of its own (this file with the argument `serve`), so that its memory is not
 * the clients' bookkeeping. Every minute: its RSS and heap, the database's connection count and its backends'
 * RSS.
 * At the end, the audit: every acknowledged response equals what the store replays (every key asked again),
 * side effects per key equal the runs the clients were told about (no duplicate), the cleanup job ran, and
 * memory and connections are flat (the last minute against minute 5). Prints a Markdown summary; exits 1 on a
 * failed audit.
 *
 *   SCALE_DIR=/work/scale-db/soak SCALE_DB_PORT=55324 scripts/scale/cluster.sh start
 *   SOAK_DB_URL=postgresql://postgres:postgres@127.0.0.1:55324/postgres deno run -A scripts/scale/soak.ts
 */
import postgres from "postgres";
import {
  type Handler,
  PostgresStore,
  withIdempotency,
} from "../../supabase/functions/_shared/idempotency.ts";

const DB_URL = Deno.env.get("SOAK_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:55324/postgres";
const MINUTES = Number(Deno.env.get("SOAK_MINUTES") ?? 30);
const RPS = Number(Deno.env.get("SOAK_RPS") ?? 40);
const CLIENTS = 8;
const USERS = 20;

const SERVE = Deno.args[0] === "serve";

/** The server: its own process, so that its memory is the server's alone (the clients keep every answer). */
async function serve(): Promise<never> {
  const sql = postgres(DB_URL, { max: 10, onnotice: () => {} });
  // One pool per isolate, shared by the store and the handler, as the functions do.
  const store = new PostgresStore({ sql });
  const failedOnce = new Set<string>();
  const handler = (fn: string): Handler => async (req) => {
    const { key, failFirst } = await req.json() as { key: string; failFirst?: boolean };
    if (failFirst && !failedOnce.has(key)) {
      failedOnce.add(key);
      return Response.json({ error: "transient" }, { status: 500 });
    }
    await sql`insert into public.soak_effects (key, fn) values (${key}, ${fn})`;
    // ~500 bytes, different on every run: a replay that is not byte-equal to the first answer shows
    return Response.json({
      key,
      run: crypto.randomUUID(),
      at: new Date().toISOString(),
      result: { summary: "x".repeat(200), words: Math.floor(Math.random() * 1e6), tags: ["a", "b", "c"] },
    }, { status: 201 });
  };
  const userOf = (req: Request) => req.headers.get("x-soak-user");
  const fns: Record<string, (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response>> = {
    soak: withIdempotency(handler("soak"), {
      functionName: "soak",
      store,
      getUserId: userOf,
      anonymous: "shared",
    }),
    "soak-short": withIdempotency(handler("soak-short"), {
      functionName: "soak-short",
      store,
      getUserId: userOf,
      anonymous: "shared",
      ttlSeconds: 3,
    }),
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(`listening ${port}`),
  }, (req, info) => {
    const name = new URL(req.url).pathname.slice(1);
    if (name === "memory") return Response.json(Deno.memoryUsage());
    const fn = fns[name];
    return fn ? fn(req, info) : new Response("not found", { status: 404 });
  });
  await server.finished;
  Deno.exit(0);
}
if (SERVE) await serve();

const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });
await sql`create table if not exists public.soak_effects (key text not null, fn text not null, at timestamptz not null default clock_timestamp())`;
await sql`alter table public.soak_effects enable row level security`;
await sql`truncate public.soak_effects`;
await sql`delete from public.idempotency_keys where function_name like 'soak%'`;
const users = Array.from({ length: USERS }, () => crypto.randomUUID());
await sql`insert into auth.users (id, email) select u, u || '@soak.example' from unnest(${users}::uuid[]) u`;

const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-all", new URL(import.meta.url).pathname, "serve"],
  env: { SOAK_DB_URL: DB_URL },
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
let port = "";
while (!port) {
  const { value, done } = await reader.read();
  if (done) throw new Error("the soak server exited before listening");
  port = /listening (\d+)/.exec(value)?.[1] ?? "";
}
const base = `http://127.0.0.1:${port}`;
const failedOnce = new Set<string>(); // keys sent with failFirst: the audit asks them again the same way

interface Ack {
  fn: string;
  user: string | null;
  body: string;
}
const acked = new Map<string, Ack>(); // key -> the first 2xx body a client got
const runsSeen = new Map<string, number>(); // key -> responses that were not replays (handler runs acknowledged)
const problems: string[] = [];
const tally = { requests: 0, replays: 0, conflicts: 0, failures500: 0, other: 0 };

async function send(fn: string, key: string, user: string | null, extra: Record<string, unknown> = {}) {
  const headers: Record<string, string> = { "idempotency-key": key, "content-type": "application/json" };
  if (user) headers["x-soak-user"] = user;
  const res = await fetch(`${base}/${fn}`, {
    method: "POST",
    headers,
    body: JSON.stringify({ key, ...extra }),
  });
  const body = await res.text();
  tally.requests++;
  const replay = res.headers.get("x-idempotency-replay") === "true";
  if (res.status === 201) {
    if (replay) {
      tally.replays++;
      const first = acked.get(key);
      if (first && first.body !== body) problems.push(`replay of ${key} differs from its first answer`);
    } else {
      runsSeen.set(key, (runsSeen.get(key) ?? 0) + 1);
      if (fn === "soak" && acked.has(key)) problems.push(`${key} ran again within its TTL`);
    }
    if (!acked.has(key) || fn === "soak-short") acked.set(key, { fn, user, body });
  } else if (res.status === 409) tally.conflicts++;
  else if (res.status === 500) tally.failures500++;
  else {
    tally.other++;
    problems.push(`${fn} ${key}: unexpected ${res.status} ${body.slice(0, 120)}`);
  }
  return { status: res.status, replay };
}

const pickUser = () => Math.random() < 0.2 ? null : users[Math.floor(Math.random() * USERS)]!;
const recent: string[] = [];
async function operation() {
  const r = Math.random();
  const key = crypto.randomUUID();
  const user = pickUser();
  if (r < 0.5) {
    await send("soak", key, user);
    recent.push(key);
    if (recent.length > 5000) recent.shift();
  } else if (r < 0.75 && recent.length > 0) {
    const again = recent[Math.floor(Math.random() * recent.length)]!;
    const ack = acked.get(again);
    if (ack) await send("soak", again, ack.user);
  } else if (r < 0.83) {
    await Promise.all([send("soak", key, user), send("soak", key, user), send("soak", key, user)]);
  } else if (r < 0.9) {
    failedOnce.add(key);
    const first = await send("soak", key, user, { failFirst: true });
    if (first.status !== 500) problems.push(`${key}: a failing first run answered ${first.status}`);
    await send("soak", key, user, { failFirst: true });
  } else {
    await send("soak-short", key, user);
    await new Promise((ok) => setTimeout(ok, 3500));
    const again = await send("soak-short", key, user);
    if (again.replay) problems.push(`${key}: replayed after its 3 s TTL`);
  }
}

interface Sample {
  minute: number;
  rssMb: number;
  heapMb: number;
  connections: number;
  dbRssMb: number;
  keys: number;
}
const samples: Sample[] = [];
async function sample(minute: number) {
  const [row] = await sql<{ connections: number; keys: number; pid: number }[]>`select
    (select count(*)::int from pg_stat_activity
      where datname = current_database() and backend_type = 'client backend') as connections,
    (select count(*)::int from public.idempotency_keys) as keys,
    pg_backend_pid() as pid`;
  const { connections, keys, pid } = row!;
  const ppid = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(" ")[3];
  const ps = new Deno.Command("ps", { args: ["--ppid", ppid!, "-o", "rss="] }).outputSync();
  const dbRssKb = new TextDecoder().decode(ps.stdout).split("\n").reduce((a, l) => a + (Number(l) || 0), 0);
  const mem = await (await fetch(`${base}/memory`)).json() as Deno.MemoryUsage;
  samples.push({
    minute,
    rssMb: Math.round(mem.rss / 1e6),
    heapMb: Math.round(mem.heapUsed / 1e6),
    connections,
    dbRssMb: Math.round(dbRssKb / 1e3),
    keys,
  });
  console.error(`soak: minute ${minute}`, JSON.stringify(samples.at(-1)), JSON.stringify(tally));
}

const cronBefore =
  (await sql`select count(*)::int as n from cron.job_run_details where status = 'succeeded'`)[0]!.n;
const end = Date.now() + MINUTES * 60_000;
await sample(0);
let minute = 0;
const sampler = setInterval(() => sample(++minute).catch((e) => problems.push(`sample: ${e}`)), 60_000);
await Promise.all(Array.from({ length: CLIENTS }, async () => {
  const gap = 1000 * CLIENTS / RPS;
  while (Date.now() < end) {
    const t0 = Date.now();
    await operation().catch((e) => problems.push(`operation: ${e}`));
    const wait = gap - (Date.now() - t0);
    if (wait > 0) await new Promise((ok) => setTimeout(ok, wait));
  }
}));
clearInterval(sampler);
await sample(++minute);

// Audit 1: every acknowledged response of the 24-hour function is replayed byte for byte.
let audited = 0;
const soakKeys = [...acked].filter(([, a]) => a.fn === "soak");
for (let i = 0; i < soakKeys.length; i += 16) {
  await Promise.all(
    soakKeys.slice(i, i + 16).map(async ([key, ack]) => {
      const headers: Record<string, string> = { "idempotency-key": key, "content-type": "application/json" };
      if (ack.user) headers["x-soak-user"] = ack.user;
      const failFirst = failedOnce.has(key) ? { failFirst: true } : {};
      const res = await fetch(`${base}/soak`, {
        method: "POST",
        headers,
        body: JSON.stringify({ key, ...failFirst }),
      });
      const body = await res.text();
      audited++;
      if (res.status !== 201 || res.headers.get("x-idempotency-replay") !== "true" || body !== ack.body) {
        problems.push(
          `audit: ${key} answered ${res.status} replay=${res.headers.get("x-idempotency-replay")}`,
        );
      }
    }),
  );
}
// Audit 2: side effects per key equal the runs acknowledged (one per 24-hour key; one per expiry for 3 s keys).
const effects = await sql<
  { key: string; n: number }[]
>`select key, count(*)::int as n from public.soak_effects
  group by key`;
let duplicates = 0, unacknowledged = 0;
for (const { key, n } of effects) {
  const seen = runsSeen.get(key) ?? 0;
  if (n > seen) duplicates++;
  if (seen === 0) unacknowledged++;
}
const withEffects = new Set(effects.map((e) => e.key));
for (const [key, seen] of runsSeen) {
  if (!withEffects.has(key) && seen > 0) {
    problems.push(`${key}: acknowledged run left no effect`);
  }
}
const cronRuns =
  (await sql`select count(*)::int as n from cron.job_run_details where status = 'succeeded'`)[0]!.n -
  cronBefore;
const cronFailed =
  (await sql`select count(*)::int as n from cron.job_run_details where status = 'failed'`)[0]!.n;
const [stats] = await sql`select total, expired_pending_cleanup from public.v_idempotency_stats
  where function_name = '*'`;
const [actual] = await sql`select count(*)::int as total from public.idempotency_keys`;

// after the first minutes' warm-up (JIT, pools filling): minute 5, or a third of the way into a short run
const second = samples[Math.min(5, Math.floor(samples.length / 3))] ?? samples[0]!, last = samples.at(-1)!;
const flat = (a: number, b: number) => b <= a * 1.25 + 5;
if (duplicates > 0) problems.push(`${duplicates} key(s) with more side effects than acknowledged runs`);
if (!flat(second.rssMb, last.rssMb)) problems.push(`server RSS grew: ${second.rssMb} -> ${last.rssMb} MB`);
if (!flat(second.connections, last.connections)) {
  problems.push(`connections grew: ${second.connections} -> ${last.connections}`);
}
if (MINUTES >= 2 && cronRuns < MINUTES - 1) {
  problems.push(`the cleanup job ran ${cronRuns} times in ${MINUTES} min`);
}
if (Number(stats!.total) !== actual!.total) {
  problems.push(`stats view total ${stats!.total} but the table has ${actual!.total} rows`);
}

console.log(`## Soak: ${MINUTES} minutes, ${CLIENTS} clients, about ${RPS} requests/s, durable PostgreSQL

| figure | value |
| --- | --- |
| requests | ${tally.requests} (${tally.replays} replays, ${tally.conflicts} 409 in progress, ${tally.failures500} planned 500s, ${tally.other} other) |
| acknowledged keys audited by asking again | ${audited}, every one replayed byte for byte: ${
  problems.some((p) => p.startsWith("audit")) ? "NO" : "yes"
} |
| keys with side effects / duplicates / effects nobody was told of | ${effects.length} / ${duplicates} / ${unacknowledged} |
| cleanup job runs (pg_cron, every minute) | ${cronRuns} succeeded, ${cronFailed} failed in total |
| stats view total vs rows in the table at the end | ${stats!.total} vs ${actual!.total} |
| server RSS, minute ${second.minute} -> last (MB) | ${second.rssMb} -> ${last.rssMb} (heap ${second.heapMb} -> ${last.heapMb}) |
| database connections, minute ${second.minute} -> last | ${second.connections} -> ${last.connections} |
| database backends' RSS, minute ${second.minute} -> last (MB) | ${second.dbRssMb} -> ${last.dbRssMb} |
| rows in idempotency_keys, minute ${second.minute} -> last | ${second.keys} -> ${last.keys} |
| audit | ${problems.length === 0 ? "passed" : `FAILED: ${problems.length} problem(s)`} |

Per minute: ${
  samples.map((s) => `${s.minute}: ${s.rssMb} MB / ${s.connections} conn / ${s.keys} keys`).join("; ")
}
`);
for (const p of problems.slice(0, 20)) console.log(`- ${p}`);
child.kill("SIGTERM");
await child.status;
await sql.end();
Deno.exit(problems.length === 0 ? 0 : 1);
