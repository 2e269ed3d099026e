/**
 * Crash harness support: the serving process (tests/crash/server.ts) and the external trainer
 * (scripts/trainer.ts) as real child processes, PostgreSQL with production durability, and PostgreSQL
 * stopped and started under the running burst.
 */

import postgres from "postgres";

/** The database, as its superuser. */
export const DB_URL = Deno.env.get("SUPABASE_DB_URL") ??
  "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const ROOT = new URL("../../", import.meta.url).pathname;

/** A child process serving HTTP on `port`. */
export interface Child {
  port: number;
  process: Deno.ChildProcess;
  /** Resolves when the process exits; `signal` is `SIGKILL` after a crash. */
  exited: Promise<Deno.CommandStatus>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** Stops it (SIGTERM), if still running, and waits. */
  stop(): Promise<void>;
}

/** Spawns `deno run -A <script>` and waits for its `listening <port>` line. */
export async function spawnServer(script: string, env: Record<string, string> = {}): Promise<Child> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", script],
    cwd: ROOT,
    env: { PORT: "0", ...env },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let running = true;
  const exited = process.status.then((status) => {
    running = false;
    return status;
  });
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${script} exited before listening`);
    buffer += value;
    const match = /listening (\d+)/.exec(buffer);
    if (match) {
      // keep draining stdout so the child never blocks on a full pipe
      void (async () => {
        try {
          while (!(await reader.read()).done) { /* drain */ }
        } catch { /* the child died */ }
      })();
      return {
        port: Number(match[1]),
        process,
        exited,
        alive: () => running,
        stop: async () => {
          if (running) process.kill("SIGTERM");
          await exited;
        },
      };
    }
  }
}

/** The serving process of the real functions with a 1 s lease and the crash seam. */
export function startFunctions(trainerUrl: string): Promise<Child> {
  return spawnServer("tests/crash/server.ts", {
    SUPABASE_DB_URL: DB_URL,
    SUPABASE_JWT_SECRET: Deno.env.get("SUPABASE_JWT_SECRET") ??
      "super-secret-jwt-token-with-at-least-32-characters-long",
    TRAINER_URL: trainerUrl,
  });
}

/** The simulated external trainer, in a process of its own so that its counts outlive every crash. */
export function startTrainer(): Promise<Child> {
  return spawnServer("scripts/trainer.ts");
}

const DURABILITY = ["fsync", "synchronous_commit", "full_page_writes"] as const;

/**
 * Runs `fn` with production durability (fsync, synchronous_commit, full_page_writes on; all three reload
 * without a restart), printing the settings, then restores the stack's configuration.
 */
export async function withProductionDurability(fn: () => Promise<void>): Promise<void> {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    for (const name of DURABILITY) await sql.unsafe(`alter system set ${name} = on`);
    await sql`select pg_reload_conf()`;
    await new Promise((r) => setTimeout(r, 300));
    const rows = await sql<{ name: string; setting: string }[]>`
      select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', 'full_page_writes')
      order by name`;
    console.log(`durability: ${rows.map((r) => `${r.name}=${r.setting}`).join(" ")}`);
    if (rows.some((r) => r.setting !== "on")) throw new Error("production durability is not on");
  } finally {
    await sql.end();
  }
  try {
    await fn();
  } finally {
    const restore = postgres(DB_URL, { max: 1, onnotice: () => {} });
    try {
      for (const name of DURABILITY) await restore.unsafe(`alter system reset ${name}`);
      await restore`select pg_reload_conf()`;
    } finally {
      await restore.end();
    }
  }
}

/** `pg_ctl stop -m <mode>` on the stack's cluster, then `pg_ctl start`, as the database owner. */
export async function restartPostgres(mode: "fast" | "immediate"): Promise<void> {
  const script = `
    source scripts/lib/env.sh
    ctl() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" "$@"; else "$PG_BIN/pg_ctl" "$@"; fi; }
    ctl -D "$PG_DATA" -m ${mode} -w stop >/dev/null
    ctl -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 60 start >/dev/null`;
  const { code, stderr } = await new Deno.Command("bash", {
    args: ["-c", script],
    cwd: ROOT,
    stderr: "piped",
  })
    .output();
  if (code !== 0) throw new Error(`pg_ctl ${mode} restart failed: ${new TextDecoder().decode(stderr)}`);
}

/** A pause. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
