/**
 * What both modes of the benchmark (scripts/bench.ts: latency; scripts/bench/throughput.ts: throughput) share:
 * production durability for the run, the bench server in a process of its own, and percentiles.
 */
import type postgres from "postgres";

const DURABILITY = ["fsync", "synchronous_commit", "full_page_writes"];

/**
 * Production durability for the run (the local stack runs with it off for speed): set with ALTER SYSTEM (all
 * three reload without a restart), printed, and reset afterwards by the returned function. `--fast` skips it.
 *
 * @param sql a superuser connection.
 * @returns a function that resets the three settings and reloads.
 */
export async function productionDurability(sql: postgres.Sql): Promise<() => Promise<void>> {
  for (const name of DURABILITY) await sql.unsafe(`alter system set ${name} = on`);
  await sql`select pg_reload_conf()`;
  await new Promise((r) => setTimeout(r, 300));
  const rows = await sql<{ name: string; setting: string }[]>`
    select name, setting from pg_settings where name = any(${DURABILITY}) order by name`;
  console.log(`PostgreSQL durability: ${rows.map((r) => `${r.name}=${r.setting}`).join(" ")}`);
  return async () => {
    for (const name of DURABILITY) await sql.unsafe(`alter system reset ${name}`);
    await sql`select pg_reload_conf()`;
  };
}

/** The bench server's process and the port it listens on. */
export interface BenchServer {
  process: Deno.ChildProcess;
  port: number;
}

/**
 * Starts scripts/bench/serve.ts (the gateway's handler, in a process of its own) and waits for its port.
 *
 * @returns the running server; stop it with SIGTERM.
 * @throws {Error} when the server exits before listening.
 */
export async function startServer(): Promise<BenchServer> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", new URL("serve.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!/listening (\d+)/.test(seen)) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the benchmark server exited before listening");
    seen += value;
  }
  reader.releaseLock();
  return { process, port: Number(/listening (\d+)/.exec(seen)![1]) };
}

/**
 * The nearest-rank percentile.
 *
 * @param samples the values (not modified).
 * @param p the percentile, 0-100.
 * @returns the value at rank ceil(p/100 * n).
 */
export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
