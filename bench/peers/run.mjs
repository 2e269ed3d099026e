// The peers side by side, from one Node client, in one run (see README.md; run.sh starts it):
//   correctness: 100 concurrent identical requests (one key, one body) to a 50 ms handler, 5 runs per
//     library, the libraries interleaved run by run: how many times the handler ran, what the 99 others
//     received, and what a retry after completion received;
//   latency: requests one at a time, every scenario in turn request by request: p50 and p99 of first
//     requests (a new key each) and of replays (one completed key), minus the bare server of the same
//     runtime (Deno for this toolkit, Node for the peers).
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "400" },
    runs: { type: "string", default: "5" },
    concurrency: { type: "string", default: "100" },
    json: { type: "string" },
  },
});
const REQUESTS = Number(values.requests);
const RUNS = Number(values.runs);
const CONCURRENCY = Number(values.concurrency);
const WARMUP = 50;
const HERE = new URL(".", import.meta.url).pathname;

/** Starts a server process and resolves with its base URL once it prints `listening <port>`. */
function startServer(command, args, env = {}) {
  const child = spawn(command, args, {
    cwd: HERE,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  // Express logs the stack of every 409 it answers for express-idempotency: keep only the tail, for a crash
  let errors = "";
  child.stderr.on("data", (chunk) => (errors = (errors + chunk).slice(-4000)));
  return new Promise((resolve, reject) => {
    let seen = "";
    child.on("exit", (code) => {
      console.error(errors);
      reject(new Error(`${command} ${args.join(" ")} exited with ${code}`));
    });
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      const match = /listening (\d+)/.exec(seen);
      if (match) resolve({ child, url: `http://127.0.0.1:${match[1]}` });
    });
  });
}

const deno = await startServer("deno", ["run", "--allow-all", "--quiet", "deno_server.ts"]);
// production, as deployed: Express's error handler then answers without logging each error's stack
const node = await startServer("node", ["node_server.mjs"], { NODE_ENV: "production" });
const servers = { deno, node };

/** Every library and backend; `runtime` names the bare server it is compared with. */
const LIBRARIES = [
  { name: "this toolkit, memory store", route: "toolkit-memory", runtime: "deno", backend: "memory" },
  { name: "this toolkit, Redis store", route: "toolkit-redis", runtime: "deno", backend: "redis" },
  { name: "this toolkit, Postgres store", route: "toolkit-postgres", runtime: "deno", backend: "postgres" },
  {
    name: 'this toolkit, memory, onInFlight "wait"',
    route: "toolkit-memory-wait",
    runtime: "deno",
    backend: "memory",
  },
  {
    name: 'this toolkit, Redis, onInFlight "wait"',
    route: "toolkit-redis-wait",
    runtime: "deno",
    backend: "redis",
  },
  {
    name: 'this toolkit, Postgres, onInFlight "wait"',
    route: "toolkit-postgres-wait",
    runtime: "deno",
    backend: "postgres",
  },
  {
    name: "Powertools, Redis, payload validation",
    route: "powertools-redis",
    runtime: "node",
    backend: "redis",
  },
  { name: "Powertools, Redis", route: "powertools-redis-novalidate", runtime: "node", backend: "redis" },
  {
    name: "@node-idempotency/core, memory",
    route: "node-idempotency-memory",
    runtime: "node",
    backend: "memory",
  },
  {
    name: "@node-idempotency/core, Redis",
    route: "node-idempotency-redis",
    runtime: "node",
    backend: "redis",
  },
  { name: "express-idempotency (memory)", route: "express-idempotency", runtime: "node", backend: "memory" },
];
/** The latency table leaves out the wait variants (same path as without for a lone request). */
const LATENCY = LIBRARIES.filter((l) => !l.route.endsWith("-wait"));

async function post(server, path, key, body) {
  const headers = { "content-type": "application/json" };
  if (key) headers["idempotency-key"] = key;
  const res = await fetch(`${servers[server].url}${path}`, { method: "POST", headers, body });
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type") ?? "", text };
}

async function runsOf(server, route) {
  const res = await fetch(`${servers[server].url}/__runs`);
  return (await res.json())[route] ?? 0;
}

/** What a loser received, in a few words: status, then the error code, "HTML page", or replay/new run. */
function describe(answer, winnerBody) {
  if (answer.status < 300) {
    return `${answer.status} ${answer.text === winnerBody ? "same body" : "other body"}`;
  }
  if (/html/i.test(answer.type)) return `${answer.status} HTML page`;
  try {
    const code = JSON.parse(answer.text)?.error?.code;
    if (code) return `${answer.status} ${code}`;
  } catch { /* not JSON */ }
  return `${answer.status} ${answer.text.slice(0, 40)}`;
}

function tally(list) {
  const counts = new Map();
  for (const item of list) counts.set(item, (counts.get(item) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([what, n]) => `${n}× ${what}`).join(", ");
}

/** One burst: `CONCURRENCY` identical requests at once, then one retry after they all finished. */
async function burst(library, run) {
  const key = `burst-${run}-${randomUUID()}`;
  const body = JSON.stringify({ title: "Q3 report", run });
  const route = `${library.route}/slow`;
  const before = await runsOf(library.runtime, route);
  const answers = await Promise.all(
    Array.from({ length: CONCURRENCY }, () => post(library.runtime, `/${route}`, key, body)),
  );
  const ranDuring = (await runsOf(library.runtime, route)) - before;
  const winners = answers.filter((a) => a.status === 201);
  const winnerBody = winners[0]?.text;
  // the first 201 body is the reference: the others are the "losers"
  const losers = answers.filter((a) => a !== winners[0]).map((a) => describe(a, winnerBody));
  const retry = await post(library.runtime, `/${route}`, key, body);
  const ranOnRetry = (await runsOf(library.runtime, route)) - before - ranDuring;
  // the same key with another body: a misuse that must not be answered with the first request's response
  const misuse = await post(library.runtime, `/${route}`, key, JSON.stringify({ title: "another", run }));
  const ranOnMisuse = (await runsOf(library.runtime, route)) - before - ranDuring - ranOnRetry;
  return {
    runs: ranDuring,
    losers: tally(losers),
    retry: `${describe(retry, winnerBody)}${ranOnRetry > 0 ? " (ran again)" : ""}`,
    misuse: `${describe(misuse, winnerBody)}${ranOnMisuse > 0 ? " (ran)" : ""}`,
  };
}

function shuffled(list) {
  const copy = [...list];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

async function correctness() {
  const results = new Map(LIBRARIES.map((l) => [l.route, []]));
  for (let run = 1; run <= RUNS; run++) {
    for (const library of shuffled(LIBRARIES)) results.get(library.route).push(await burst(library, run));
  }
  return LIBRARIES.map((library) => {
    const list = results.get(library.route);
    return {
      library: library.name,
      runs: list.map((r) => r.runs).join(", "),
      losers: [...new Set(list.map((r) => r.losers))].join(" ∥ "),
      retry: [...new Set(list.map((r) => r.retry))].join(" ∥ "),
      misuse: [...new Set(list.map((r) => r.misuse))].join(" ∥ "),
    };
  });
}

function percentile(samples, p) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function latency() {
  const body = JSON.stringify({ title: "Q3 report", content: "One sentence." });
  const series = [
    { name: "bare Deno", runtime: "deno", route: "bare", kind: "bare", samples: [] },
    { name: "bare Node", runtime: "node", route: "bare", kind: "bare", samples: [] },
  ];
  for (const library of LATENCY) {
    series.push({ ...library, kind: "first", samples: [] });
    series.push({ ...library, kind: "replay", samples: [], key: `replay-${randomUUID()}` });
  }
  const statuses = new Map();
  for (let i = 0; i < WARMUP + REQUESTS; i++) {
    for (const s of series) {
      const key = s.kind === "bare" ? undefined : s.kind === "replay" ? s.key : `first-${randomUUID()}`;
      const start = performance.now();
      const answer = await post(s.runtime, `/${s.route}/fast`, key, body);
      const ms = performance.now() - start;
      if (i >= WARMUP) {
        s.samples.push(ms);
        const label = `${s.route} ${s.kind}`;
        statuses.set(label, new Set([...(statuses.get(label) ?? []), answer.status]));
      }
    }
  }
  const bare = {
    deno: percentile(series[0].samples, 50),
    node: percentile(series[1].samples, 50),
  };
  const rows = [];
  for (const library of LATENCY) {
    const first = series.find((s) => s.route === library.route && s.kind === "first");
    const replay = series.find((s) => s.route === library.route && s.kind === "replay");
    const base = bare[library.runtime];
    rows.push({
      library: library.name,
      backend: library.backend,
      firstP50: percentile(first.samples, 50),
      firstP99: percentile(first.samples, 99),
      replayP50: percentile(replay.samples, 50),
      replayP99: percentile(replay.samples, 99),
      firstOverhead: percentile(first.samples, 50) - base,
      replayOverhead: percentile(replay.samples, 50) - base,
      replayStatuses: [...statuses.get(`${library.route} replay`)].join("/"),
      bare: base,
    });
  }
  return {
    bare,
    bareP99: { deno: percentile(series[0].samples, 99), node: percentile(series[1].samples, 99) },
    rows,
  };
}

const f = (ms) => ms.toFixed(3);
const plus = (ms) => `${ms >= 0 ? "+" : ""}${ms.toFixed(3)}`;

try {
  console.log(
    `Node ${process.version}; ${CONCURRENCY} concurrent identical requests to a 50 ms handler, ${RUNS} runs`,
  );
  const checks = await correctness();
  console.log(
    "\n| library | handler runs per burst | what the others received | a retry after completion | the key with another body |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  for (const c of checks) {
    console.log(`| ${c.library} | ${c.runs} | ${c.losers} | ${c.retry} | ${c.misuse} |`);
  }

  console.log(
    `\nlatency: ${REQUESTS} requests per series after ${WARMUP} warm-up, one at a time, interleaved`,
  );
  const { bare, bareP99, rows } = await latency();
  console.log(
    `bare Deno p50 ${f(bare.deno)} p99 ${f(bareP99.deno)} ms; bare Node p50 ${f(bare.node)} p99 ${
      f(bareP99.node)
    } ms`,
  );
  console.log(
    "\n| library | backend | first p50 (overhead, x bare) | first p99 | replay p50 (overhead, x bare) | replay p99 | replay status |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    console.log(
      `| ${r.library} | ${r.backend} | ${f(r.firstP50)} (${plus(r.firstOverhead)}, x${
        (r.firstP50 / r.bare).toFixed(2)
      }) | ` +
        `${f(r.firstP99)} | ${f(r.replayP50)} (${plus(r.replayOverhead)}, x${
          (r.replayP50 / r.bare).toFixed(2)
        }) | ` +
        `${f(r.replayP99)} | ${r.replayStatuses} |`,
    );
  }
  console.log("\noverhead at p50, this toolkit against the fastest peer on each backend (from this run):");
  for (const backend of ["memory", "redis"]) {
    const ours = rows.find((r) => r.backend === backend && r.library.startsWith("this toolkit"));
    const peers = rows.filter((r) => r.backend === backend && !r.library.startsWith("this toolkit"));
    for (const kind of ["first", "replay"]) {
      const field = `${kind}Overhead`;
      const best = peers.reduce((a, b) => (b[field] < a[field] ? b : a));
      const gap = ours[field] - best[field];
      const verdict = gap <= 0 ? "at or below it" : `${f(gap)} ms above it`;
      console.log(
        `  ${backend}, ${kind}: toolkit ${plus(ours[field])} ms; fastest peer ${best.library} ${
          plus(best[field])
        } ms; ${verdict}`,
      );
    }
  }
  if (values.json) {
    const { writeFileSync } = await import("node:fs");
    const { resolve } = await import("node:path");
    // run.sh changes into bench/peers; a relative --json path is the caller's
    const path = resolve(process.env.BENCH_CWD ?? process.cwd(), values.json);
    writeFileSync(path, JSON.stringify({ checks, bare, bareP99, rows }, null, 2));
  }
} finally {
  for (const { child } of Object.values(servers)) {
    child.removeAllListeners("exit");
    child.kill("SIGTERM");
  }
}
