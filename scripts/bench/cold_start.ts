/**
 * Cold start of one edge function as Supabase deploys it: a new `deno serve` process with only the
 * function's own `deno.json` (nothing from the repository root), timed from spawn to the first response it
 * serves. The probe is a `GET` (every example function answers 405 before touching a database), so the
 * figure is module loading and server start, not a query.
 */

/** The deployable functions (each with its own `deno.json`). */
export const FUNCTION_NAMES = ["generate-training-data", "process-document", "start-training"] as const;

const FUNCTIONS_DIR = new URL("../../supabase/functions/", import.meta.url);
/** Between probes while the process starts, in ms: the figure is accurate to about this. */
const PROBE_INTERVAL_MS = 2;
const START_TIMEOUT_MS = 30_000;

/** One cold start. */
export interface ColdStart {
  /** Spawn to the first served response, in ms. */
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
 * response. The process is killed before this returns.
 *
 * @param name The function's folder name.
 * @param env Extra environment for the function (e.g. `SUPABASE_DB_URL`).
 * @returns The time to the first response, and that response.
 * @throws {Error} when the process exits or does not answer within 30 s.
 */
export function coldStart(name: string, env: Record<string, string> = {}): Promise<ColdStart> {
  return coldStartAt(new URL(`${name}/`, FUNCTIONS_DIR), name, env);
}

async function coldStartAt(dir: URL, name: string, env: Record<string, string> = {}): Promise<ColdStart> {
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
      try {
        const res = await fetch(`http://127.0.0.1:${port}/`);
        const ms = performance.now() - started;
        return { ms, status: res.status, body: await res.text() };
      } catch {
        const done = await Promise.race([exited, sleep(PROBE_INTERVAL_MS).then(() => null)]);
        if (done) {
          const stderr = await new Response(child.stderr).text();
          throw new Error(`${name} exited (code ${done.code}) before serving: ${stderr}`);
        }
      }
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

/**
 * Prints the median cold start of every function over `runs` starts, next to an empty function's (the floor:
 * `deno serve` itself), after one warm-up start each that fills Deno's caches (as a deployed function's bundle
 * is built before it serves). The functions take turns start by start, so a noisy moment hits them all alike.
 *
 * @param runs Starts measured per function.
 * @returns The medians by function name, in ms.
 */
export async function reportColdStarts(runs: number): Promise<Record<string, number>> {
  // the floor: `deno serve` of a function that imports nothing
  const empty = await Deno.makeTempDir({ prefix: "cold-start-empty-" });
  await Deno.writeTextFile(`${empty}/deno.json`, '{ "imports": {}, "lock": false }');
  await Deno.writeTextFile(
    `${empty}/index.ts`,
    'export default { fetch: () => new Response("ok") } satisfies Deno.ServeDefaultExport;',
  );
  const dirs: [string, URL][] = [
    ["(empty function)", new URL(`file://${empty}/`)],
    ...FUNCTION_NAMES.map((name): [string, URL] => [name, new URL(`${name}/`, FUNCTIONS_DIR)]),
  ];
  const samples = new Map(dirs.map(([name]) => [name, [] as number[]]));
  try {
    for (const [name, dir] of dirs) await coldStartAt(dir, name);
    for (let i = 0; i < runs; i++) {
      for (const [name, dir] of dirs) samples.get(name)!.push((await coldStartAt(dir, name)).ms);
    }
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
  console.log(
    `cold start (spawn to first served response, own deno.json only), ${runs} starts each, interleaved:`,
  );
  const medians: Record<string, number> = {};
  for (const [name, list] of samples) medians[name] = median(list);
  const floor = medians["(empty function)"] ?? 0;
  for (const [name, list] of samples) {
    const over = name === "(empty function)" ? "" : `  (+${(medians[name]! - floor).toFixed(1)} over empty)`;
    console.log(
      `  ${name.padEnd(24)} median ${medians[name]!.toFixed(1)} ms, min ${
        Math.min(...list).toFixed(1)
      }${over}`,
    );
  }
  const goal = medians["process-document"] ?? Infinity;
  console.log(`design goal: process-document under 100 ms: ${goal < 100 ? "met" : "NOT met"}\n`);
  return medians;
}

if (import.meta.main) await reportColdStarts(Number(Deno.args[0] ?? "7"));
