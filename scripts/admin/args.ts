/**
 * The admin CLI's arguments, parsed without I/O: every command and flag checked, every mistake a
 * {@link UsageError} that says what is wrong and what is expected.
 */

/** A bad command line; the CLI prints its message and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Key statuses as the table stores them. */
export const STATUSES = ["processing", "completed", "failed"] as const;

/** One parsed command. */
export type Command =
  | { name: "inspect"; key: string; user: string | null; function: string | null }
  | {
    name: "list";
    status: (typeof STATUSES)[number] | null;
    function: string | null;
    stuck: boolean;
    limit: number;
  }
  | { name: "release-stuck"; olderThan: string; reason: string; function: string | null }
  | { name: "purge"; user: string | null; function: string | null }
  | { name: "stats" }
  | { name: "cleanup"; batchSize: number; maxBatches: number }
  | { name: "help" };

/** A command with the global flags. */
export interface Invocation {
  command: Command;
  /** Machine-readable output. */
  json: boolean;
  /** Skip the confirmation of a destructive command. */
  yes: boolean;
  /** The database; default `SUPABASE_DB_URL`. */
  dbUrl: string | null;
}

/** The usage text. */
export const USAGE = `usage: deno task admin <command> [options] [--json] [--db-url URL]

commands:
  inspect <key> [--user UUID] [--function NAME]   every row of a key (all columns but secrets)
  list [--status processing|completed|failed] [--function NAME] [--stuck] [--limit N]
                                                  keys, newest first (default limit 100)
  release-stuck --older-than DURATION [--function NAME] [--reason TEXT] [--yes]
                                                  mark stuck keys failed so their retries run again
  purge (--user UUID | --function NAME) [--yes]   delete keys (never one under a live lease)
  stats                                           v_idempotency_stats as a table
  cleanup [--batch-size N] [--max-batches N]      delete expired keys now (what the hourly job does)

DURATION: a number and a unit, e.g. 30s, 15m, 2h, 1d.
Destructive commands (release-stuck, purge) ask for confirmation unless --yes is given.`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,128}$/;
const KEY = /^[A-Za-z0-9_-]{3,256}$/;
const UNITS: Record<string, string> = { s: "seconds", m: "minutes", h: "hours", d: "days" };

/** Which flags each command accepts, and whether each takes a value. */
const FLAGS: Record<string, Record<string, "value" | "switch">> = {
  inspect: { user: "value", function: "value" },
  list: { status: "value", function: "value", stuck: "switch", limit: "value" },
  "release-stuck": { "older-than": "value", function: "value", reason: "value" },
  purge: { user: "value", function: "value" },
  stats: {},
  cleanup: { "batch-size": "value", "max-batches": "value" },
};
const GLOBAL: Record<string, "value" | "switch"> = {
  json: "switch",
  yes: "switch",
  "db-url": "value",
  help: "switch",
};

/**
 * Parses `args` (as `Deno.args`).
 *
 * @param args The command line after the script name.
 * @returns The invocation.
 * @throws {UsageError} for an unknown command or flag, a missing or malformed value, or a stray argument.
 */
export function parseArgs(args: readonly string[]): Invocation {
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    return { command: { name: "help" }, json: false, yes: false, dbUrl: null };
  }
  const accepted = FLAGS[name];
  if (!accepted) {
    throw new UsageError(`unknown command "${name}"; expected one of ${Object.keys(FLAGS).join(", ")}`);
  }
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const [flag, inline] = splitFlag(arg.slice(2));
    const kind = accepted[flag] ?? GLOBAL[flag];
    if (!kind) throw new UsageError(`${name}: unknown option --${flag}`);
    if (flags.has(flag)) throw new UsageError(`${name}: --${flag} given twice`);
    if (kind === "switch") {
      if (inline !== undefined) throw new UsageError(`${name}: --${flag} takes no value`);
      flags.set(flag, true);
      continue;
    }
    const value = inline ?? rest[++i];
    if (value === undefined || value === "" || (inline === undefined && value.startsWith("--"))) {
      throw new UsageError(`${name}: --${flag} needs a value`);
    }
    flags.set(flag, value);
  }
  const str = (flag: string) => (flags.get(flag) as string | undefined) ?? null;
  const invocation = (command: Command): Invocation => ({
    command: flags.has("help") ? { name: "help" } : command,
    json: flags.has("json"),
    yes: flags.has("yes"),
    dbUrl: str("db-url"),
  });
  if (name !== "inspect" && positional.length > 0) {
    throw new UsageError(`${name}: unexpected argument "${positional[0]}"`);
  }
  switch (name) {
    case "inspect": {
      if (positional.length !== 1) throw new UsageError("inspect: give exactly one key");
      const key = positional[0]!;
      if (!KEY.test(key)) {
        throw new UsageError(`inspect: "${key}" is not a valid key (3-256 of A-Z a-z 0-9 _ -)`);
      }
      return invocation({
        name,
        key,
        user: uuid(name, str("user")),
        function: functionName(name, str("function")),
      });
    }
    case "list": {
      const status = str("status");
      if (status !== null && !(STATUSES as readonly string[]).includes(status)) {
        throw new UsageError(`list: --status must be one of ${STATUSES.join(", ")}, got "${status}"`);
      }
      const stuck = flags.has("stuck");
      if (stuck && status !== null && status !== "processing") {
        throw new UsageError(
          "list: --stuck keys are processing; it cannot be combined with another --status",
        );
      }
      return invocation({
        name,
        status: status as (typeof STATUSES)[number] | null,
        function: functionName(name, str("function")),
        stuck,
        limit: integer(name, "limit", str("limit"), 100, 1, 10_000),
      });
    }
    case "release-stuck": {
      const olderThan = str("older-than");
      if (olderThan === null) throw new UsageError("release-stuck: --older-than is required (e.g. 15m)");
      const reason = str("reason") ?? "released with the admin CLI";
      return invocation({
        name,
        olderThan: duration(name, olderThan),
        reason,
        function: functionName(name, str("function")),
      });
    }
    case "purge": {
      const user = uuid(name, str("user"));
      const fn = functionName(name, str("function"));
      if ((user === null) === (fn === null)) {
        throw new UsageError("purge: give exactly one of --user or --function");
      }
      return invocation({ name, user, function: fn });
    }
    case "stats":
      return invocation({ name });
    default:
      return invocation({
        name: "cleanup",
        batchSize: integer(name, "batch-size", str("batch-size"), 10_000, 1, 1_000_000),
        maxBatches: integer(name, "max-batches", str("max-batches"), 100, 1, 100_000),
      });
  }
}

function splitFlag(text: string): [string, string | undefined] {
  const eq = text.indexOf("=");
  return eq < 0 ? [text, undefined] : [text.slice(0, eq), text.slice(eq + 1)];
}

function uuid(command: string, value: string | null): string | null {
  if (value !== null && !UUID.test(value)) {
    throw new UsageError(`${command}: --user must be a uuid, got "${value}"`);
  }
  return value;
}

function functionName(command: string, value: string | null): string | null {
  if (value !== null && !FUNCTION_NAME.test(value)) {
    throw new UsageError(`${command}: --function must be 1-128 of A-Z a-z 0-9 _ -, got "${value}"`);
  }
  return value;
}

function integer(
  command: string,
  flag: string,
  value: string | null,
  fallback: number,
  min: number,
  max: number,
) {
  if (value === null) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw new UsageError(
      `${command}: --${flag} must be a whole number from ${min} to ${max}, got "${value}"`,
    );
  }
  return n;
}

/**
 * A duration such as `15m` as a Postgres interval (`15 minutes`).
 *
 * @param command For the message.
 * @param value The flag's value.
 * @returns The interval text.
 * @throws {UsageError} unless it is digits and one of s, m, h, d.
 */
export function duration(command: string, value: string): string {
  const match = /^(\d{1,7})([smhd])$/.exec(value);
  if (!match) {
    throw new UsageError(
      `${command}: --older-than must be a number and a unit (s, m, h, d), e.g. 15m; got "${value}"`,
    );
  }
  return `${match[1]} ${UNITS[match[2]!]}`;
}
