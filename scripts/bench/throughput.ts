/**
 * Throughput mode of the benchmark (`deno task bench --throughput`): distinct keys, many clients at once.
 *
 *   scripts/stack.sh start && deno task bench --throughput [--duration 5] [--rounds 3] [--clients 8,32]
 *     [--only store|http] [--fast]
 *
 * (a) The store alone: `begin` + `complete` of a new key through the real {@link PostgresStore} on the pool as
 *     deployed (`openPool`: a ResilientPostgres of 10 connections, the isolate's shared pool's settings), from
 *     N concurrent loops in this process, next to pgbench running the same two statements
 *     (`select * from idempotency_begin(...)`, then `select idempotency_complete(...)`, each its own
 *     transaction, random keys) with N clients. With prepared statements (`-M prepared`; the store's default on
 *     a direct connection) and without (`prepare: false`, as behind a transaction pooler; postgres.js then
 *     sends unnamed extended-protocol statements, which is pgbench's `-M extended`, not `-M simple`). Rates
 *     are pairs/s. The same two statements through a plain postgres.js pool of the same size, with no store
 *     around them, split the gap to pgbench into the driver's share and the store's.
 * (b) Over HTTP through the gateway's request handler in a process of its own (scripts/bench/serve.ts, as the
 *     latency mode): `process-document` bare, wrapped for the response only (`withIdempotency` with the default
 *     PostgresStore) and transactional (`withIdempotentTransaction`, as deployed), N concurrent clients each
 *     sending requests with new keys; requests/s of 201 answers.
 *
 * Next to each rate: CPU time per operation of the process doing the work (this one for the store, the server
 * for HTTP), read from the process's own counters; on 2 shared cores the rates trade against it.
 *
 * Every scenario runs `--duration` seconds, and the whole list runs `--rounds` times, in a rotated order each
 * round, so a noisy moment of the machine hits every scenario alike; the figure is each scenario's median over
 * the rounds, and ratios are of those medians. PostgreSQL runs with production durability unless `--fast`.
 */
import postgres from "postgres";
import process from "node:process";
import { openPool, PostgresStore } from "../../supabase/functions/_shared/idempotency.ts";
import { signJwt } from "../../tests/support/jwt.ts";
import { percentile, productionDurability, startServer } from "./common.ts";

/** What the throughput mode runs. */
export interface ThroughputOptions {
  /** The superuser connection string of the stack's database. */
  dbUrl: string;
  /** Seconds per scenario and round. */
  durationSeconds: number;
  /** How many times every scenario runs (rotated order each round). */
  rounds: number;
  /** Concurrent clients, one measurement per value. */
  clients: number[];
  /** Skip production durability (development only). */
  fast: boolean;
  /** Only the scenarios whose name starts with this (`store` or `http`); all when empty. */
  only: string;
}

/** One measured series at one client count: its rate in each round. */
interface Series {
  name: string;
  clients: number;
  rates: number[];
  /** CPU time per operation, in µs, of the process doing the work (see {@link Measured}). */
  cpu: number[];
  run: (clients: number, seconds: number) => Promise<Measured>;
}

/**
 * One scenario's run: its rate, and CPU time per operation of the process that does the work (this process
 * for the store, the server for HTTP; none for pgbench). On 2 shared cores, CPU is what the rate trades
 * against, and it is far less noisy than the rate.
 */
interface Measured {
  rate: number;
  cpuUsPerOp?: number;
}

const FUNCTION_NAME = "bench-throughput";
/** A stored answer of process-document's size and shape. */
const BODY = new TextEncoder().encode(JSON.stringify({
  document_id: "6f1c1d55-8f5a-4f43-a0d4-4a8d7a4c2e11",
  job_id: "0b7e3a55-2f0c-4a52-8d9e-6f3f4a1c9b20",
  status: "completed",
  title: "Bench",
  word_count: 6,
  content_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}));
const HEADERS = { "content-type": "application/json" };
const FINGERPRINT = "a".repeat(64);
const TTL_SECONDS = 86_400;
const LEASE_SECONDS = 30;
const WARMUP_SECONDS = 1;
/** openPool's default size, as deployed (pool.ts). */
const POOL_MAX = 10;
/** pgbench's worker threads (`-j`): one per core of this machine. */
const PGBENCH_THREADS = 2;

/**
 * Runs the throughput mode and prints its table and goal lines.
 *
 * @param options what to run.
 * @throws {Error} on invalid options, or when a scenario fails (a non-201, a refused claim, pgbench's exit).
 */
export async function runThroughput(options: ThroughputOptions): Promise<void> {
  const { dbUrl, durationSeconds, rounds, clients } = options;
  if (![durationSeconds, rounds].every((n) => Number.isInteger(n) && n >= 1)) {
    throw new Error("--duration (seconds) and --rounds must be whole numbers >= 1");
  }
  if (!["", "store", "http"].includes(options.only)) throw new Error("--only: store or http");
  if (clients.some((c) => !Number.isInteger(c) || c < 1)) throw new Error("--clients: whole numbers >= 1");
  const admin = postgres(dbUrl, { max: 1, onnotice: () => {} });
  const restore = options.fast ? async () => {} : await productionDurability(admin);
  const [user] = await admin<{ id: string }[]>`
    insert into auth.users (email) values (${`bench-${crypto.randomUUID()}@bench.local`}) returning id`;
  const userId = user!.id;
  const run = crypto.randomUUID().slice(0, 8);
  const pgbenchScript = await Deno.makeTempFile({ suffix: ".sql" });
  await Deno.writeTextFile(pgbenchScript, PGBENCH_SCRIPT);
  // as deployed: the default store is a PostgresStore on the isolate's pool (openPool's settings)
  const pools = [openPool({ url: dbUrl }), openPool({ url: dbUrl, prepare: false })] as const;
  const prepared = new PostgresStore({ sql: pools[0] });
  const unprepared = new PostgresStore({ sql: pools[1] });
  // the driver's own ceiling: the same two statements on a plain postgres.js pool of the same size
  const driver = postgres(dbUrl, { max: POOL_MAX, onnotice: () => {} });
  const server = await startServer();
  try {
    const pgbench = (mode: string) => (c: number, s: number) =>
      pgbenchRate({ dbUrl, mode, clients: c, seconds: s, script: pgbenchScript, userId, run });
    const store = (s: PostgresStore, tag: string) => (c: number, seconds: number) =>
      storeRate(s, { clients: c, seconds, userId, keyPrefix: `tp-${run}-${tag}-` });
    const token = await signJwt({ sub: userId, role: "authenticated" });
    const http = (fn: string) => (c: number, seconds: number) =>
      httpRate(`http://127.0.0.1:${server.port}/functions/v1/${fn}`, {
        clients: c,
        seconds,
        token,
        serverPid: server.process.pid,
        keyed: fn !== "process-document",
        keyPrefix: `tp-${run}-${fn.replace("+", "_")}-`,
      });
    const kinds: [string, Series["run"]][] = [
      [STORE_PGBENCH_PREPARED, pgbench("prepared")],
      [STORE_PREPARED, store(prepared, "p")],
      [STORE_PGBENCH_EXTENDED, pgbench("extended")],
      [STORE_UNPREPARED, store(unprepared, "u")],
      [
        STORE_DRIVER,
        (c: number, seconds: number) =>
          driverRate(driver, { clients: c, seconds, userId, keyPrefix: `tp-${run}-d-` }),
      ],
      [HTTP_BARE, http("process-document")],
      [HTTP_WRAPPED, http("process-document+postgres")],
      [HTTP_TRANSACTIONAL, http("process-document+transactional")],
    ];
    const list: Series[] = clients.flatMap((c) =>
      kinds.filter(([name]) => name.startsWith(options.only)).map(([name, run]) => ({
        name,
        clients: c,
        rates: [],
        cpu: [],
        run,
      }))
    );
    console.log(
      `throughput: distinct keys; ${durationSeconds} s per scenario, ${rounds} round(s), order rotated each ` +
        `round; clients ${clients.join(", ")}\nstore: PostgresStore on openPool() (ResilientPostgres, ` +
        `${POOL_MAX} connections), in this process; ${await pgbenchVersion()}, ${PGBENCH_THREADS} threads\n` +
        `http: the gateway's handler in its own process (scripts/bench/serve.ts), the isolate's one pool of ` +
        `${POOL_MAX}\nload average before: ${await loadAverage()}\n`,
    );
    // warm-up, not measured: the store's pools connect, the server's pool fills, the JIT settles
    for (const s of list.filter((s) => !s.name.includes("pgbench"))) await s.run(s.clients, WARMUP_SECONDS);
    for (let round = 0; round < rounds; round++) {
      const shift = round % list.length;
      for (const s of [...list.slice(shift), ...list.slice(0, shift)]) {
        const { rate, cpuUsPerOp } = await s.run(s.clients, durationSeconds);
        s.rates.push(rate);
        if (cpuUsPerOp !== undefined) s.cpu.push(cpuUsPerOp);
      }
    }
    console.log(`load average after: ${await loadAverage()}\n`);
    report(list, clients);
  } finally {
    server.process.kill("SIGTERM");
    await server.process.status;
    await Promise.allSettled([...pools, driver].map((sql) => sql.end({ timeout: 5 })));
    await Deno.remove(pgbenchScript).catch(() => {});
    // the user's keys and documents go with it (on delete cascade)
    await admin`delete from auth.users where id = ${userId}`;
    await restore();
    await admin.end();
  }
}

const STORE_PGBENCH_PREPARED = "store SQL: pgbench -M prepared";
const STORE_PREPARED = "store: PostgresStore (prepared)";
const STORE_PGBENCH_EXTENDED = "store SQL: pgbench -M extended";
const STORE_UNPREPARED = "store: PostgresStore (prepare: false)";
const STORE_DRIVER = "store SQL: postgres.js alone, no store";
const HTTP_BARE = "http: process-document bare";
const HTTP_WRAPPED = "http: response-only (withIdempotency)";
const HTTP_TRANSACTIONAL = "http: transactional (as deployed)";

/** The same two statements as PostgresStore's begin and complete, each its own transaction. */
const PGBENCH_SCRIPT = `\\set r random(1, 9000000000000000)
select record_id, lease_token from public.idempotency_begin('tp-' || :run::text || '-b-' || :r::text, :user::uuid, '${FUNCTION_NAME}', :fp::text, ${TTL_SECONDS}, ${LEASE_SECONDS}) \\gset
select public.idempotency_complete(:record_id::uuid, :lease_token::uuid, 201, :body::bytea, 'identity', :headers::jsonb);
`;

/** pgbench's transactions/s (each one a begin + complete pair) for `clients` clients over `seconds`. */
async function pgbenchRate(
  o: {
    dbUrl: string;
    mode: string;
    clients: number;
    seconds: number;
    script: string;
    userId: string;
    run: string;
  },
): Promise<Measured> {
  const hex = [...BODY].map((b) => b.toString(16).padStart(2, "0")).join("");
  const args = [
    "-n",
    "-M",
    o.mode,
    "-c",
    String(o.clients),
    "-j",
    String(Math.min(o.clients, PGBENCH_THREADS)),
    "-T",
    String(o.seconds),
    "-f",
    o.script,
    "-D",
    `run=${o.run}`,
    "-D",
    `user=${o.userId}`,
    "-D",
    `fp=${FINGERPRINT}`,
    "-D",
    `body=\\x${hex}`,
    "-D",
    `headers=${JSON.stringify(HEADERS)}`,
    o.dbUrl,
  ];
  const out = await new Deno.Command(pgbenchPath(), { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const tps = /^tps = ([0-9.]+)/m.exec(text);
  const failed = /^number of failed transactions: (\d+)/m.exec(text);
  if (!out.success || !tps || (failed && failed[1] !== "0")) throw new Error(`pgbench failed:\n${text}`);
  return { rate: Number(tps[1]) };
}

async function pgbenchVersion(): Promise<string> {
  const out = await new Deno.Command(pgbenchPath(), { args: ["--version"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** Debian's pgbench of PostgreSQL 15 (PG_BIN as the stack scripts), else the one in PATH. */
function pgbenchPath(): string {
  const bin = `${Deno.env.get("PG_BIN") ?? "/usr/lib/postgresql/15/bin"}/pgbench`;
  try {
    Deno.statSync(bin);
    return bin;
  } catch {
    return "pgbench";
  }
}

/** Pairs/s of `begin` + `complete` of new keys through `store`, from `clients` concurrent loops. */
async function storeRate(
  store: PostgresStore,
  o: { clients: number; seconds: number; userId: string; keyPrefix: string },
): Promise<Measured> {
  const response = { status: 201, headers: HEADERS, body: BODY, encoding: "identity" as const };
  return await closedLoop(o.clients, o.seconds, ownCpuMicros, async () => {
    const claim = await store.begin({
      key: o.keyPrefix + crypto.randomUUID(),
      userId: o.userId,
      functionName: FUNCTION_NAME,
      fingerprint: FINGERPRINT,
      ttlSeconds: TTL_SECONDS,
      lockTimeoutSeconds: LEASE_SECONDS,
    });
    if (claim.outcome !== "started") throw new Error(`begin of a new key gave ${claim.outcome}`);
    const lease = { recordId: claim.recordId, leaseToken: claim.leaseToken };
    if (!(await store.complete(lease, response))) throw new Error("complete refused a fresh lease");
  });
}

/**
 * Pairs/s of the store's two statements sent by plain postgres.js (no store, no resilient pool, no deadline):
 * what any postgres.js store can reach here, so the gap to pgbench splits into the driver's and the store's.
 */
async function driverRate(
  sql: postgres.Sql,
  o: { clients: number; seconds: number; userId: string; keyPrefix: string },
): Promise<Measured> {
  return await closedLoop(o.clients, o.seconds, ownCpuMicros, async () => {
    const [claim] = await sql<{ record_id: string; lease_token: string }[]>`
      select * from public.idempotency_begin(
        ${o.keyPrefix + crypto.randomUUID()}::text, ${o.userId}::uuid, ${FUNCTION_NAME}::text,
        ${FINGERPRINT}::text, ${TTL_SECONDS}::integer, ${LEASE_SECONDS}::integer
      )`;
    const [done] = await sql<{ ok: boolean }[]>`
      select public.idempotency_complete(
        ${claim!.record_id}::uuid, ${claim!.lease_token}::uuid, 201::integer, ${BODY}::bytea,
        'identity'::text, ${sql.json(HEADERS)}::jsonb
      ) as ok`;
    if (done?.ok !== true) throw new Error("complete refused a fresh lease");
  });
}

/** Requests/s of 201 answers from `clients` concurrent HTTP clients, each request with a new key. */
async function httpRate(
  url: string,
  o: {
    clients: number;
    seconds: number;
    token: string;
    serverPid: number;
    keyed: boolean;
    keyPrefix: string;
  },
): Promise<Measured> {
  const body = JSON.stringify({ title: "Bench", content: "One sentence. Another sentence with words." });
  const headers = { authorization: `Bearer ${o.token}`, "content-type": "application/json" };
  return await closedLoop(o.clients, o.seconds, () => processCpuMicros(o.serverPid), async () => {
    const res = await fetch(url, {
      method: "POST",
      headers: o.keyed ? { ...headers, "idempotency-key": o.keyPrefix + crypto.randomUUID() } : headers,
      body,
    });
    const text = await res.text();
    if (res.status !== 201) {
      throw new Error(`${url}: HTTP ${res.status}, expected 201: ${text.slice(0, 200)}`);
    }
  });
}

/**
 * `clients` loops, each calling `once` until `seconds` have passed: completed calls per second of wall time
 * (until the last loop's last call ended), and the CPU time `cpuMicros` counted meanwhile, per call.
 */
async function closedLoop(
  clients: number,
  seconds: number,
  cpuMicros: () => number,
  once: () => Promise<void>,
): Promise<Measured> {
  const cpuBefore = cpuMicros();
  const start = performance.now();
  const until = start + seconds * 1000;
  let done = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < until) {
      await once();
      done++;
    }
  }));
  const rate = done / ((performance.now() - start) / 1000);
  return { rate, cpuUsPerOp: (cpuMicros() - cpuBefore) / done };
}

/** This process's CPU time (user + system), in µs. */
function ownCpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** Another process's CPU time (user + system) from /proc, in µs (Linux counts it in ticks of 10 ms). */
function processCpuMicros(pid: number): number {
  // the fields after the command name (which ends with the last ")"): utime and stime are the 12th and 13th
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ").at(-1)!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

async function loadAverage(): Promise<string> {
  try {
    return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

function report(list: Series[], clients: number[]): void {
  const median = (name: string, c: number) => percentile(find(list, name, c).rates, 50);
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  const baseline: Record<string, string> = {
    [STORE_PREPARED]: STORE_PGBENCH_PREPARED,
    [STORE_UNPREPARED]: STORE_PGBENCH_EXTENDED,
    [STORE_DRIVER]: STORE_PGBENCH_PREPARED,
    [HTTP_WRAPPED]: HTTP_BARE,
    [HTTP_TRANSACTIONAL]: HTTP_BARE,
  };
  const width = 30;
  console.log(
    `rate per second, median of the rounds (% of the baseline above it);\nCPU µs per operation of the ` +
      `process doing the work (store: this process; http: the server)\n`,
  );
  console.log(`${"scenario".padEnd(40)}${clients.map((c) => `${c} clients`.padStart(width)).join("")}`);
  for (const name of [...new Set(list.map((s) => s.name))]) {
    const cells = clients.map((c) => {
      const series = find(list, name, c);
      const m = median(name, c);
      const base = baseline[name];
      const ratio = base && has(list, base, c) ? ` (${Math.round((100 * m) / median(base, c))} %)` : "";
      const cpu = series.cpu.length ? `, ${fmt(percentile(series.cpu, 50))} µs` : "";
      return `${fmt(m)}${ratio}${cpu}`.padStart(width);
    });
    console.log(`${name.padEnd(40)}${cells.join("")}`);
  }
  console.log("\nper round (/s):");
  for (const s of list) {
    console.log(`  ${s.name.padEnd(40)} ${String(s.clients).padStart(3)}: ${s.rates.map(fmt).join(", ")}`);
  }
  console.log("\ngoals, from this run's medians:");
  const goal = (c: number, label: string, name: string, base: string, min: number) => {
    if (!has(list, name, c) || !has(list, base, c)) return;
    const ratio = median(name, c) / median(base, c);
    console.log(
      `  ${String(c).padStart(3)} clients: ${label} >= ${100 * min} %: ${ratio >= min ? "met" : "NOT met"} ` +
        `(${(100 * ratio).toFixed(0)} %)`,
    );
  };
  for (const c of clients) {
    goal(c, "PostgresStore / pgbench -M prepared", STORE_PREPARED, STORE_PGBENCH_PREPARED, 0.8);
    goal(c, "transactional / bare", HTTP_TRANSACTIONAL, HTTP_BARE, 0.7);
  }
}

function has(list: Series[], name: string, clients: number): boolean {
  return list.some((x) => x.name === name && x.clients === clients);
}

function find(list: Series[], name: string, clients: number): Series {
  const s = list.find((x) => x.name === name && x.clients === clients);
  if (!s) throw new Error(`no series ${name} at ${clients}`);
  return s;
}
