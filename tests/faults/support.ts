/**
 * Fault-test support: the database driven through its own tools (psql, pg_ctl, pg_isready), never through
 * postgres.js, so the test process cannot itself be killed by the driver defect it checks; and a private
 * functions gateway, so a crash of the server under test is seen (and does not take the stack's down).
 */

import { JWT_SECRET, signJwt } from "../support/jwt.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** The database, as its superuser. */
export const DB_URL = Deno.env.get("SUPABASE_DB_URL") ??
  "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const DB_PORT = new URL(DB_URL).port || "5432";
const PG_BIN = Deno.env.get("PG_BIN") ?? "/usr/lib/postgresql/15/bin";
const PG_DATA = `${ROOT}.local/db`;
const RUNNING_AS_ROOT = Deno.uid() === 0;

async function run(command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const output = await new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(`${command} ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return text;
}

/** Runs SQL with psql as the superuser; returns its unaligned output, trimmed. */
export async function psql(sql: string): Promise<string> {
  const args = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", DB_URL, "-c", sql];
  return (await run("psql", args, { PGOPTIONS: "-c client_min_messages=warning" })).trim();
}

/** pg_ctl on the stack's cluster, as the cluster's owner. */
export async function pgCtl(...args: string[]): Promise<void> {
  const pgctl = [`${PG_BIN}/pg_ctl`, "-D", PG_DATA, ...args];
  if (RUNNING_AS_ROOT) await run("runuser", ["-u", "postgres", "--", ...pgctl]);
  else await run(pgctl[0]!, pgctl.slice(1));
}

/** Whether PostgreSQL accepts connections right now (pg_isready exits 0). */
export async function acceptsConnections(): Promise<boolean> {
  const { code } = await new Deno.Command(`${PG_BIN}/pg_isready`, {
    args: ["-q", "-h", "127.0.0.1", "-p", DB_PORT, "-t", "1"],
    stdout: "null",
    stderr: "null",
  }).output();
  return code === 0;
}

/**
 * Stops PostgreSQL with `mode` (`fast`: a clean shutdown; `immediate`: a crash, recovered from the WAL at the
 * next start), starts it again, and returns `performance.now()` at the first moment it accepts connections,
 * polled every 10 ms.
 */
export async function restartDatabase(mode: "fast" | "immediate"): Promise<number> {
  await pgCtl("-m", mode, "-w", "stop");
  await pgCtl("-l", `${ROOT}.local/logs/postgres.log`, "-W", "start");
  for (let i = 0; i < 3000; i++) {
    if (await acceptsConnections()) return performance.now();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("PostgreSQL did not accept connections within 30 s of its restart");
}

/** Turns production durability on or off through the stack's documented switch; returns the settings. */
export async function durability(mode: "on" | "off" | "status"): Promise<string> {
  return (await run("bash", [`${ROOT}scripts/stack.sh`, "durability", mode])).trim();
}

/** A fresh user in auth.users and a valid token for it. */
export async function newUser(): Promise<{ id: string; token: string }> {
  const id = await psql(`insert into auth.users (email) values ('fault-${crypto.randomUUID()}@test.local')
    returning id`);
  return { id, token: await signJwt({ sub: id, role: "authenticated", aud: "authenticated" }) };
}

/** A functions gateway of its own, on `port`, with its output collected. */
export interface Gateway {
  /** Its base URL. */
  url: string;
  /** Everything it wrote to stdout and stderr so far. */
  log(): string;
  /** Whether the process still runs. */
  alive(): boolean;
  /** Its resident memory in KiB (Linux `/proc`). */
  rssKiB(): Promise<number>;
  /** Ends it (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

/** Starts `scripts/gateway.ts` on `port` (0: any free one) with the stack's settings, as scripts/stack.sh does. */
export async function startGateway(port: number, env: Record<string, string> = {}): Promise<Gateway> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", `${ROOT}scripts/gateway.ts`],
    cwd: ROOT,
    env: { PORT: String(port), SUPABASE_DB_URL: DB_URL, SUPABASE_JWT_SECRET: JWT_SECRET, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  let exited = false;
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk);
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  // port 0: the system picks a free port (no clash with another process), which the gateway prints
  const listening = () => /functions gateway on (http:\/\/127\.0\.0\.1:\d+)/.exec(text)?.[1];
  let url = port === 0 ? "" : `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (exited) throw new Error(`the gateway exited at start:\n${text}`);
    if (url === "") {
      url = listening() ?? "";
      if (url === "") {
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
    }
    try {
      const res = await fetch(`${url}/health`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch { /* not listening yet */ }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    log: () => text,
    alive: () => !exited,
    async rssKiB() {
      const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
      return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    },
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => !exited && child.kill("SIGKILL"), 8000);
        await status;
        clearTimeout(timer);
      }
      await collecting;
    },
  };
}

/** Where {@link report} appends: scripts/test.sh prints this file (`deno test --quiet` hides test output). */
export const FIGURES_FILE = `${ROOT}.local/logs/fault-figures.txt`;

/** Prints a test's figures, and appends them to {@link FIGURES_FILE}. */
export async function report(text: string): Promise<void> {
  console.log(text);
  await Deno.mkdir(`${ROOT}.local/logs`, { recursive: true });
  await Deno.writeTextFile(FIGURES_FILE, `${text}\n`, { append: true });
}

/** The p-th percentile (0-100) of `values`, by nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
