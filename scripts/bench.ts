/**
 * Latency of bare and wrapped handlers over HTTP through the functions gateway, from one run.
 *
 *   scripts/stack.sh start && deno run --allow-all scripts/bench.ts [--requests 400] [--fast]
 *   deno task bench --throughput [--duration 5] [--rounds 3] [--clients 8,32] [--only store|http] [--fast]
 *
 * PostgreSQL runs with production durability (fsync, synchronous_commit, full_page_writes on) unless --fast.
 *
 * scripts/bench/serve.ts, in a process of its own, serves through the gateway's request handler the bare and
 * the wrapped form of two handlers: `echo` (no work, so the wrapper's own cost shows) and the real
 * `process-document` (a transaction of two inserts). Requests are sent one at a time and
 * the scenarios take turns request by request, so a noisy moment of the machine hits them all alike.
 * Figures to quote are the medians and the ratios of this one run.
 *
 * First it prints each function's cold start (scripts/bench/cold_start.ts): a fresh `deno serve` with only
 * the function's own deno.json, from spawn to its answer to the first real request (a keyed POST that writes
 * its rows, a scrape, a webhook event), next to an empty function and postgres.js alone.
 *
 * `--throughput` measures rates instead, with many clients at once: see scripts/bench/throughput.ts.
 */
import postgres from "postgres";
import { parseArgs } from "node:util";
import { signJwt } from "../tests/support/jwt.ts";
import { coldStartsWithStack, stackConnections } from "./bench/cold_start.ts";
import { percentile, productionDurability, startServer } from "./bench/common.ts";
import { runThroughput } from "./bench/throughput.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const WARMUP = 50;

/** One measured series: a name and how to send one request of it. */
interface Scenario {
  name: string;
  send: (i: number) => Promise<Response>;
  samples: number[];
}

function scenarios(base: string, token: string, run: string): Scenario[] {
  const body = JSON.stringify({ title: "Bench", content: "One sentence. Another sentence with words." });
  const post = (fn: string, key?: string) =>
    fetch(`${base}/functions/v1/${fn}`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        ...(key ? { "idempotency-key": key } : {}),
      },
      body,
    });
  const series = (name: string, send: Scenario["send"]): Scenario => ({ name, send, samples: [] });
  const list: Scenario[] = [];
  for (const fn of ["echo", "process-document"]) {
    const stores = fn === "echo"
      ? ["postgres", "redis", "memory", "layered"]
      : ["postgres", "transactional", "in-transaction"];
    list.push(series(`${fn} bare`, () => post(fn)));
    for (const store of stores) {
      const wrapped = `${fn}+${store}`;
      list.push(
        series(`${wrapped} first`, (i) => post(wrapped, `bench-${run}-${wrapped}-${i}`.replace("+", "_"))),
      );
      list.push(
        series(`${wrapped} replay`, () => post(wrapped, `bench-${run}-${wrapped}-replay`.replace("+", "_"))),
      );
    }
  }
  return list;
}

async function measure(list: Scenario[], requests: number): Promise<void> {
  for (let i = 0; i < WARMUP + requests; i++) {
    for (const s of list) {
      const start = performance.now();
      const res = await s.send(i);
      await res.arrayBuffer();
      const ms = performance.now() - start;
      if (res.status !== 201) throw new Error(`${s.name}: HTTP ${res.status}, expected 201`);
      if (i >= WARMUP) s.samples.push(ms);
    }
  }
}

function report(list: Scenario[]): void {
  const p50 = (name: string) => percentile(list.find((s) => s.name === name)!.samples, 50);
  console.log(`${"scenario".padEnd(40)} ${"n".padStart(5)} ${"p50 ms".padStart(8)} ${"p99 ms".padStart(8)}`);
  for (const s of list) {
    const [a, b] = [percentile(s.samples, 50), percentile(s.samples, 99)].map((v) =>
      v.toFixed(3).padStart(8)
    );
    console.log(`${s.name.padEnd(40)} ${String(s.samples.length).padStart(5)} ${a} ${b}`);
  }
  console.log("\nfrom this run's medians:");
  for (const fn of ["echo", "process-document"]) {
    const bare = p50(`${fn} bare`);
    for (const s of list.filter((x) => x.name.startsWith(`${fn}+`) && x.name.endsWith(" first"))) {
      const wrapped = s.name.replace(/ first$/, "");
      const first = p50(s.name), replay = p50(`${wrapped} replay`);
      console.log(
        `  ${wrapped.padEnd(32)} first adds ${(first - bare).toFixed(3)} ms (x${
          (first / bare).toFixed(2)
        } of bare);` +
          ` replay x${(replay / bare).toFixed(2)} of bare`,
      );
    }
  }
  const front = p50("echo+layered replay"), noFront = p50("echo+postgres replay");
  console.log(
    `\nwhat the Redis front buys (echo, replay p50): layered ${front.toFixed(3)} ms vs Postgres alone ` +
      `${noFront.toFixed(3)} ms (x${(front / noFront).toFixed(2)}); first request: layered ` +
      `${p50("echo+layered first").toFixed(3)} ms vs ${p50("echo+postgres first").toFixed(3)} ms`,
  );
  const txAdded = p50("process-document+transactional first") - p50("process-document bare");
  const txReplay = p50("process-document+transactional replay") / p50("process-document bare");
  console.log(
    `\ndesign goals (process-document, transactional): first request adds < 0.7 ms at p50: ` +
      `${txAdded < 0.7 ? "met" : "NOT met"} (${txAdded.toFixed(3)} ms); replay faster than bare: ` +
      `${txReplay < 1 ? "met" : "NOT met"} (x${txReplay.toFixed(2)})`,
  );
  const added = p50("process-document+postgres first") - p50("process-document bare");
  const replayRatio = p50("process-document+postgres replay") / p50("process-document bare");
  console.log(
    `\ndesign goals (process-document, Postgres store): first request adds < 1 ms at p50: ` +
      `${added < 1 ? "met" : "NOT met"} (${added.toFixed(3)} ms); replay faster than bare: ` +
      `${replayRatio < 1 ? "met" : "NOT met"} (x${replayRatio.toFixed(2)})`,
  );
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      requests: { type: "string", default: "400" },
      fast: { type: "boolean", default: false },
      // throughput mode (scripts/bench/throughput.ts)
      throughput: { type: "boolean", default: false },
      duration: { type: "string", default: "5" },
      rounds: { type: "string", default: "3" },
      clients: { type: "string", default: "8,32" },
      only: { type: "string", default: "" },
    },
  });
  if (values.throughput) {
    return await runThroughput({
      dbUrl: DB_URL,
      durationSeconds: Number(values.duration),
      rounds: Number(values.rounds),
      clients: values.clients.split(",").map(Number),
      fast: values.fast,
      only: values.only,
    });
  }
  const requests = Number(values.requests);
  if (!Number.isInteger(requests) || requests < 10) {
    throw new Error("--requests must be a whole number >= 10");
  }

  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const restore = values.fast ? async () => {} : await productionDurability(sql);
  try {
    await coldStartsWithStack(7, DB_URL, stackConnections());
  } catch (error) {
    await restore();
    await sql.end();
    throw error;
  }
  const [user] = await sql<{ id: string }[]>`
    insert into auth.users (email) values (${`bench-${crypto.randomUUID()}@bench.local`}) returning id`;
  const token = await signJwt({ sub: user!.id, role: "authenticated" });
  const server = await startServer();
  try {
    const list = scenarios(`http://127.0.0.1:${server.port}`, token, crypto.randomUUID().slice(0, 8));
    console.log(
      `${requests} requests per scenario after ${WARMUP} warm-up, one at a time, scenarios interleaved;\n` +
        `server: the gateway's handler in its own process (scripts/bench/serve.ts)\n`,
    );
    await measure(list, requests);
    report(list);
  } finally {
    server.process.kill("SIGTERM");
    await server.process.status;
    // the user's documents and idempotency keys go with it (on delete cascade)
    await sql`delete from auth.users where id = ${user!.id}`;
    await restore();
    await sql.end();
  }
}

if (import.meta.main) await main();
