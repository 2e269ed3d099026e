/**
 * Cold start of one edge function as Supabase deploys it: a new `deno serve` process with only the
 * function's own `deno.json` (nothing from the repository root), timed from spawn to the end of the first
 * response it serves.
 *
 * Two probes:
 * - the deploy check (tests/deploy) sends a `GET`, which every POST-only function refuses with its JSON 405;
 * - the benchmark (`deno task bench`) sends each function the first request it exists for: a keyed POST that
 *   writes rows and its stored answer (201), a metrics scrape, a webhook event. That is the figure to quote:
 *   it includes loading the Postgres driver, connecting (TCP, SCRAM) and the request's own statements.
 *
 * Two floors measured in the same run: an empty function (`deno serve` itself) and a function that only
 * imports postgres.js and runs `select 1` on its first request (what any function using this driver pays).
 */

/** The deployable functions (each with its own `deno.json`). */
export const FUNCTION_NAMES = ["generate-training-data", "process-document", "start-training"] as const;

/** Every function whose cold start the benchmark reports. */
export const BENCH_FUNCTION_NAMES = [...FUNCTION_NAMES, "idempotency-metrics", "run-actions"] as const;

const FUNCTIONS_DIR = new URL("../../supabase/functions/", import.meta.url);
/** Between probes while the process starts, in ms: the figure is accurate to about this. */
const PROBE_INTERVAL_MS = 2;
const START_TIMEOUT_MS = 30_000;

/** The first request sent to a starting function, and the status it must answer. */
export interface Probe {
  method: string;
  headers?: Record<string, string>;
  body?: string;
  /** The expected status; another fails the measurement. */
  status: number;
}

/** A `GET` with nothing else: a POST-only function's 405. */
export const GET_PROBE: Probe = { method: "GET", status: 405 };

/** One cold start. */
export interface ColdStart {
  /** Spawn to the first served response (body read), in ms. */
  ms: number;
  /** The first response's status and body. */
  status: number;
  body: string;
}

/** A free loopback port (a listener opened and closed). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * Starts `name` under `deno serve --config supabase/functions/<name>/deno.json` and times its first
 * response to `probe` (by default a `GET`, whatever status it answers). The process is killed before this
 * returns.
 *
 * @param name The function's folder name.
 * @param env Extra environment for the function (e.g. `SUPABASE_DB_URL`).
 * @param probe The first request.
 * @returns The time to the first response, and that response.
 * @throws {Error} when the process exits or does not answer within 30 s.
 */
export function coldStart(
  name: string,
  env: Record<string, string> = {},
  probe: Omit<Probe, "status"> = GET_PROBE,
): Promise<ColdStart> {
  return coldStartAt(new URL(`${name}/`, FUNCTIONS_DIR), name, env, probe);
}

async function coldStartAt(
  dir: URL,
  name: string,
  env: Record<string, string>,
  probe: Omit<Probe, "status">,
): Promise<ColdStart> {
  const port = freePort();
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "serve",
      "--quiet",
      "--no-check",
      "--allow-env",
      "--allow-net",
      "--config",
      new URL("deno.json", dir).pathname,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      new URL("index.ts", dir).pathname,
    ],
    cwd: dir.pathname,
    env: { DENO_NO_UPDATE_CHECK: "1", ...env },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const exited = child.status.then((status) => status);
  try {
    while (performance.now() - started < START_TIMEOUT_MS) {
      let res: Response;
      try {
        res = await fetch(`http://127.0.0.1:${port}/`, probe);
      } catch {
        const done = await Promise.race([exited, sleep(PROBE_INTERVAL_MS).then(() => null)]);
        if (done) {
          const stderr = await new Response(child.stderr).text();
          throw new Error(`${name} exited (code ${done.code}) before serving: ${stderr}`);
        }
        continue;
      }
      const body = await res.text();
      return { ms: performance.now() - started, status: res.status, body };
    }
    throw new Error(`${name} did not answer within ${START_TIMEOUT_MS} ms`);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await exited;
    await child.stderr.cancel().catch(() => {});
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Median of `values`. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** A function made for the run: its folder holds `deno.json` and `index.ts`. */
async function scratchFunction(source: string): Promise<URL> {
  const dir = await Deno.makeTempDir({ prefix: "cold-start-" });
  await Deno.writeTextFile(`${dir}/deno.json`, '{ "imports": {}, "lock": false }');
  await Deno.writeTextFile(`${dir}/index.ts`, source);
  return new URL(`file://${dir}/`);
}

const EMPTY_FUNCTION =
  'export default { fetch: () => new Response("ok") } satisfies Deno.ServeDefaultExport;';

const POSTGRES_ONLY_FUNCTION = `
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
const sql = postgres(Deno.env.get("SUPABASE_DB_URL")!, { max: 1, onnotice: () => {} });
export default {
  fetch: async () => Response.json(await sql\`select 1 as one\`),
} satisfies Deno.ServeDefaultExport;
`;

/** What the benchmark's probes need: a user's token, the service role key, the database. */
export interface ProbeCredentials {
  /** A user's JWT (role authenticated). */
  userToken: string;
  /** The service role key. */
  serviceKey: string;
  /** The database the functions use (their `SUPABASE_DB_URL`). */
  dbUrl: string;
  /** How they reach it, for the printed headings. */
  via: string;
}

/**
 * Each function's first real request: a new idempotency key (or event) on every start. The ids of the
 * datasets named in `run-actions` events go to `eventIds`, so the caller can delete their action records.
 */
export function realProbes(
  { userToken, serviceKey }: ProbeCredentials,
  eventIds: string[] = [],
): Record<string, () => Probe> {
  const post = (token: string, body: unknown, status: number, key = true): Probe => ({
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      ...(key ? { "idempotency-key": `cold-start-${crypto.randomUUID()}` } : {}),
    },
    body: JSON.stringify(body),
    status,
  });
  return {
    "(empty function)": () => ({ method: "GET", status: 200 }),
    "(postgres.js only)": () => ({ method: "GET", status: 200 }),
    "generate-training-data": () =>
      post(userToken, { name: "cold start", task: "classification", count: 5 }, 201),
    "process-document": () =>
      post(userToken, { title: "Cold start", content: "One sentence. Another sentence with words." }, 201),
    "start-training": () =>
      post(userToken, {
        model_name: "cold-start",
        hyperparameters: { learning_rate: 0.001, epochs: 1, batch_size: 8 },
      }, 201),
    "idempotency-metrics": () => ({
      method: "GET",
      headers: { authorization: `Bearer ${serviceKey}` },
      status: 200,
    }),
    // a new dataset's event (the row does not exist, so the action records that and queues nothing)
    "run-actions": () => {
      const id = crypto.randomUUID();
      eventIds.push(id);
      return post(
        serviceKey,
        {
          type: "INSERT",
          table: "training_datasets",
          schema: "public",
          record: { id, user_id: null, name: "cold start", task: "classification" },
          old_record: null,
        },
        200,
        false,
      );
    },
  };
}

/**
 * Prints the median cold start of every function over `runs` starts, each answering its first real request
 * (see {@link realProbes}), next to the two floors (an empty function; postgres.js alone with one query),
 * after one warm-up start each that fills Deno's caches (as a deployed function's bundle is built before it
 * serves). The functions take turns start by start, so a noisy moment hits them all alike.
 *
 * @param runs Starts measured per function.
 * @param credentials What the probes send, and the database they use.
 * @param eventIds Receives the dataset ids of the webhook events sent (see {@link realProbes}).
 * @returns The medians by function name, in ms.
 * @throws {Error} when a function answers another status than its probe expects.
 */
export async function reportColdStarts(
  runs: number,
  credentials: ProbeCredentials,
  eventIds: string[] = [],
): Promise<Record<string, number>> {
  const env = { SUPABASE_DB_URL: credentials.dbUrl };
  const floors: [string, URL][] = [
    ["(empty function)", await scratchFunction(EMPTY_FUNCTION)],
    ["(postgres.js only)", await scratchFunction(POSTGRES_ONLY_FUNCTION)],
  ];
  const dirs: [string, URL][] = [
    ...floors,
    ...BENCH_FUNCTION_NAMES.map((name): [string, URL] => [name, new URL(`${name}/`, FUNCTIONS_DIR)]),
  ];
  const probes = realProbes(credentials, eventIds);
  const samples = new Map(dirs.map(([name]) => [name, [] as number[]]));
  const start = async (name: string, dir: URL) => {
    const probe = probes[name]!();
    const first = await coldStartAt(dir, name, env, probe);
    if (first.status !== probe.status) {
      throw new Error(`${name}: first response ${first.status}, expected ${probe.status}: ${first.body}`);
    }
    return first.ms;
  };
  try {
    for (const [name, dir] of dirs) await start(name, dir);
    for (let i = 0; i < runs; i++) {
      for (const [name, dir] of dirs) samples.get(name)!.push(await start(name, dir));
    }
  } finally {
    for (const [, dir] of floors) await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `cold start, ${credentials.via}: spawn of \`deno serve\` (own deno.json only) to its first real response ` +
      `read, ${runs} starts each, interleaved:`,
  );
  const medians: Record<string, number> = {};
  for (const [name, list] of samples) medians[name] = median(list);
  const empty = medians["(empty function)"]!, driver = medians["(postgres.js only)"]!;
  for (const [name, list] of samples) {
    const over = name === "(empty function)" ? "" : `  (+${(medians[name]! - empty).toFixed(1)} over empty` +
      (name === "(postgres.js only)"
        ? ")"
        : `, ${(medians[name]! - driver).toFixed(1)} over postgres.js only)`);
    console.log(
      `  ${name.padEnd(24)} median ${medians[name]!.toFixed(1)} ms, min ${
        Math.min(...list).toFixed(1)
      }${over}`,
    );
  }
  const goal = medians["process-document"] ?? Infinity;
  console.log(
    `design goal: process-document under 100 ms: ${goal < 100 ? "met" : "NOT met"} ` +
      `(${goal.toFixed(1)} ms; the postgres.js-only floor is ${driver.toFixed(1)} ms)\n`,
  );
  return medians;
}

/** The phases of one cold start, in ms, as measured inside the process. */
interface Phases {
  /** Process start to the first line of the probe (the runtime itself). */
  runtime: number;
  /** `import "npm:postgres@3.4.9"`: the driver and the node layer it pulls in (net, tls, crypto, stream, fs). */
  driver: number;
  /** The function's module (the toolkit and its own modules), the driver already loaded. */
  modules: number;
  /** The first request: connect (TCP, SCRAM, postgres.js's array-type query) and the request's statements. */
  firstRequest: number;
  /** The same request again on the open connection. */
  secondRequest: number;
  /**
   * CPU time (user and system, every thread) the process used up to the end of its first request: unlike
   * the wall-clock phases, it barely grows when other processes compete for the cores.
   */
  cpu: number;
}

/** The program {@link reportPhases} runs in a fresh process per start. */
const PHASES_PROBE = `
const runtime = performance.now();
// deno-lint-ignore no-import-prefix
await import("npm:postgres@3.4.9");
const driver = performance.now();
const { default: fn } = await import(Deno.env.get("COLD_START_MODULE"));
const modules = performance.now();
const probes = JSON.parse(Deno.env.get("COLD_START_PROBES"));
const send = async (probe) => {
  const start = performance.now();
  const res = await fn.fetch(new Request("http://127.0.0.1/", probe));
  await res.text();
  if (res.status !== probe.status) throw new Error(\`status \${res.status}\`);
  return performance.now() - start;
};
const firstRequest = await send(probes[0]);
const { user, system } = (await import("node:process")).cpuUsage();
const secondRequest = await send(probes[1]);
const cpu = (user + system) / 1000;
console.log(JSON.stringify({ runtime, driver: driver - runtime, modules: modules - driver, firstRequest, secondRequest, cpu }));
Deno.exit(0);
`;

/**
 * Where a function's cold start goes, measured inside fresh `deno run` processes (with only the function's
 * own deno.json): the runtime, postgres.js with its node layer, the toolkit and the function's modules, the
 * first request and a second one. Prints medians over `runs` processes per function.
 *
 * @param runs Processes per function.
 * @param credentials What the probes send, and the database they use.
 * @param eventIds Receives the dataset ids of the webhook events sent.
 * @returns The median phases by function name.
 */
export async function reportPhases(
  runs: number,
  credentials: ProbeCredentials,
  eventIds: string[] = [],
): Promise<Record<string, Phases>> {
  const dir = await Deno.makeTempDir({ prefix: "cold-start-phases-" });
  const program = `${dir}/probe.js`;
  await Deno.writeTextFile(program, PHASES_PROBE);
  const probes = realProbes(credentials, eventIds);
  const samples = new Map(BENCH_FUNCTION_NAMES.map((name) => [name, [] as Phases[]]));
  try {
    for (let i = 0; i <= runs; i++) {
      for (const name of BENCH_FUNCTION_NAMES) {
        const fnDir = new URL(`${name}/`, FUNCTIONS_DIR);
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--quiet",
            "--no-check",
            "--allow-env",
            "--allow-net",
            "--allow-read",
            "--config",
            new URL("deno.json", fnDir).pathname,
            program,
          ],
          cwd: fnDir.pathname,
          env: {
            DENO_NO_UPDATE_CHECK: "1",
            SUPABASE_DB_URL: credentials.dbUrl,
            COLD_START_MODULE: new URL("index.ts", fnDir).href,
            COLD_START_PROBES: JSON.stringify([probes[name]!(), probes[name]!()]),
          },
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (!out.success) throw new Error(`${name}: ${new TextDecoder().decode(out.stderr)}`);
        // the first round fills Deno's caches, as the cold start's warm-up does
        if (i > 0) samples.get(name)!.push(JSON.parse(new TextDecoder().decode(out.stdout)));
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `where the time goes, ${credentials.via} (inside fresh \`deno run\` processes, medians of ${runs}, ms):`,
  );
  const columns: (keyof Phases)[] = ["runtime", "driver", "modules", "firstRequest", "secondRequest", "cpu"];
  console.log(`  ${"".padEnd(24)} ${columns.map((c) => c.padStart(13)).join(" ")}`);
  const medians: Record<string, Phases> = {};
  for (const [name, list] of samples) {
    const m = Object.fromEntries(columns.map((c) => [c, median(list.map((p) => p[c]))])) as unknown as Phases;
    medians[name] = m;
    console.log(`  ${name.padEnd(24)} ${columns.map((c) => m[c].toFixed(1).padStart(13)).join(" ")}`);
  }
  console.log(
    "  driver: postgres.js and the node modules it imports; modules: the toolkit and the function (driver " +
      "loaded);\n  firstRequest: connect (TCP, SCRAM, the driver's array-type query) and the statements; " +
      "secondRequest: warm;\n  cpu: CPU time of the process up to the end of its first request (less sensitive to load)\n",
  );
  return medians;
}

/** A way the functions reach the database: its heading, and the URL they get as `SUPABASE_DB_URL`. */
export interface Connection {
  via: string;
  url: string;
}

/**
 * Runs {@link reportColdStarts} and {@link reportPhases} for each connection, with a user made for the run,
 * then deletes the user (its rows go with it) and the action records of the webhook events sent.
 *
 * @param runs Starts measured per function.
 * @param adminUrl A superuser connection to the stack's database.
 * @param connections How the functions reach the database: directly, through the transaction pooler.
 * @returns The cold-start medians by connection heading, then by function name, in ms.
 */
export async function coldStartsWithStack(
  runs: number,
  adminUrl: string,
  connections: Connection[],
): Promise<Record<string, Record<string, number>>> {
  const { signJwt } = await import("../../tests/support/jwt.ts");
  const { default: postgres } = await import("postgres");
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  const [user] = await sql<{ id: string }[]>`
    insert into auth.users (email) values (${`cold-${crypto.randomUUID()}@bench.local`}) returning id`;
  const eventIds: string[] = [];
  const userToken = await signJwt({ sub: user!.id, role: "authenticated" });
  const serviceKey = await signJwt({ iss: "supabase-demo", role: "service_role" });
  const medians: Record<string, Record<string, number>> = {};
  try {
    for (const { via, url } of connections) {
      const credentials = { dbUrl: url, via, userToken, serviceKey };
      medians[via] = await reportColdStarts(runs, credentials, eventIds);
      await reportPhases(runs, credentials, eventIds);
    }
    return medians;
  } finally {
    await sql`delete from auth.users where id = ${user!.id}`;
    const signals = eventIds.map((id) => `public.training_datasets/INSERT/${id}`);
    await sql`delete from public.action_records where signal_id = any(${signals})`;
    await sql.end();
  }
}

/**
 * The two ways the benchmark connects the functions: directly (the stack's `SUPABASE_DB_URL`), and through
 * the stack's pgbouncer in transaction mode (`POOLER_URL`), as Supabase advises for edge functions (its
 * Supavisor on port 6543): the pooler keeps its server connections, so a new function's first request meets
 * a warm backend.
 *
 * @returns The connections, from the environment scripts/lib/env.sh exports.
 */
export function stackConnections(): Connection[] {
  const direct = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
  const pooled = Deno.env.get("POOLER_URL") ??
    "postgresql://postgres:postgres@127.0.0.1:54329/postgres?prepare=false";
  return [
    { via: "direct connection", url: direct },
    { via: "transaction pooler (pgbouncer, as Supavisor)", url: pooled },
  ];
}

if (import.meta.main) {
  const connections = stackConnections();
  await coldStartsWithStack(Number(Deno.args[0] ?? "7"), connections[0]!.url, connections);
}
