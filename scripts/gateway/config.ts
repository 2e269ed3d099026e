/**
 * The part of `supabase/config.toml` the gateway needs: `verify_jwt` of each `[functions.<name>]` block.
 * A deliberately small TOML subset: table headers, `key = value` lines, `#` comments.
 */

/** A function's gateway settings. */
export interface FunctionSettings {
  /** Whether the gateway checks the caller's JWT before the function runs (Supabase's default: true). */
  verifyJwt: boolean;
}

/** Supabase's default when config.toml says nothing about a function. */
export const DEFAULT_SETTINGS: FunctionSettings = { verifyJwt: true };

/** A config.toml line the gateway cannot read. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Function names Supabase accepts: letters, digits, `-` and `_`. */
const FUNCTION_NAME = /^[A-Za-z0-9_-]+$/;

/** Strips a `#` comment that is not inside a double-quoted string. */
function stripComment(line: string): string {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"' && line[i - 1] !== "\\") quoted = !quoted;
    if (c === "#" && !quoted) return line.slice(0, i);
  }
  return line;
}

/** The `[functions.<name>]` settings in `toml`, keyed by function name; other tables are skipped. */
export function parseFunctionSettings(toml: string): Map<string, FunctionSettings> {
  const settings = new Map<string, FunctionSettings>();
  let current: FunctionSettings | null = null;
  toml.split(/\r?\n/).forEach((raw, index) => {
    const line = stripComment(raw).trim();
    if (line === "") return;
    const header = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (header) {
      const path = header[1]!.split(".").map((part) => part.trim().replace(/^"(.*)"$/, "$1"));
      if (path[0] === "functions" && path.length === 2 && FUNCTION_NAME.test(path[1]!)) {
        current = settings.get(path[1]!) ?? { ...DEFAULT_SETTINGS };
        settings.set(path[1]!, current);
      } else {
        current = null;
      }
      return;
    }
    if (current === null) return;
    const pair = /^([A-Za-z0-9_-]+)\s*=\s*(.+)$/.exec(line);
    if (!pair) throw new ConfigError(`config.toml line ${index + 1}: cannot read "${raw.trim()}"`);
    if (pair[1] === "verify_jwt") {
      if (pair[2] !== "true" && pair[2] !== "false") {
        throw new ConfigError(`config.toml line ${index + 1}: verify_jwt must be true or false`);
      }
      current.verifyJwt = pair[2] === "true";
    }
  });
  return settings;
}

/** The settings of `name`: its block's, or {@link DEFAULT_SETTINGS}. */
export function settingsFor(settings: Map<string, FunctionSettings>, name: string): FunctionSettings {
  return settings.get(name) ?? DEFAULT_SETTINGS;
}
