/**
 * The rollout switch: idempotency on or off, and a percentage of keys it applies to, from options and from
 * environment variables read on every request, so an operator changes it (`supabase secrets set`) without
 * deploying code. The percentage is decided by a hash of the function and the key, so a retry of a
 * bypassed request is bypassed again and a retry of a protected one is protected again.
 */

import { createHash } from "node:crypto";

/** The switch as it applies to one request. */
export interface RolloutSetting {
  /** `false`: every request runs without idempotency (and is counted as bypassed). */
  enabled: boolean;
  /** The share of keys protected, 0-100 (fractions allowed, e.g. 0.5). */
  percent: number;
}

/** Reads one environment variable; `undefined` when unset or not permitted. */
export type EnvReader = (name: string) => string | undefined;

/**
 * The setting for `functionName`: `IDEMPOTENCY_ENABLED_<FN>` / `IDEMPOTENCY_ROLLOUT_PERCENT_<FN>` (the name
 * upper-cased, `-` as `_`), else `IDEMPOTENCY_ENABLED` / `IDEMPOTENCY_ROLLOUT_PERCENT`, else `fallback` (the
 * options). A malformed variable is ignored, so a typo in a secret never takes a function down.
 *
 * @param functionName The edge function's name.
 * @param fallback The setting from the options.
 * @param env Where variables are read.
 * @returns The setting in force for this request.
 * @example Read the switch
 * ```ts
 * const setting = rolloutSetting("process-document", { enabled: true, percent: 100 });
 * ```
 */
export function rolloutSetting(
  functionName: string,
  fallback: RolloutSetting,
  env: EnvReader = readEnv,
): RolloutSetting {
  const suffix = functionName.toUpperCase().replaceAll("-", "_");
  const pick = <T>(name: string, parse: (raw: string) => T | undefined): T | undefined =>
    parseOr(env(`${name}_${suffix}`), parse) ?? parseOr(env(name), parse);
  return {
    enabled: pick("IDEMPOTENCY_ENABLED", parseBoolean) ?? fallback.enabled,
    percent: pick("IDEMPOTENCY_ROLLOUT_PERCENT", parsePercent) ?? fallback.percent,
  };
}

/**
 * Whether the request with `key` is inside the rollout: a stable hash of function and key mapped to
 * [0, 100) is below `percent`.
 *
 * @param functionName The edge function's name.
 * @param key The idempotency key (or a keyless base key).
 * @param percent The share protected, 0-100.
 * @returns `true` when the request is protected.
 * @example Half of the keys
 * ```ts
 * const protectedRequest = inRollout("f", "key-1", 50);
 * ```
 */
export function inRollout(functionName: string, key: string, percent: number): boolean {
  if (percent >= 100) return true;
  if (percent <= 0) return false;
  const digest = createHash("sha256").update(`${functionName.length}:${functionName},${key}`).digest();
  // 32 bits are plenty of resolution for a percentage with two decimals
  const point = digest.readUInt32BE(0) / 0x1_0000_0000 * 100;
  return point < percent;
}

function parseOr<T>(raw: string | undefined, parse: (raw: string) => T | undefined): T | undefined {
  return raw === undefined || raw.trim() === "" ? undefined : parse(raw.trim().toLowerCase());
}

function parseBoolean(raw: string): boolean | undefined {
  if (["1", "true", "on", "yes"].includes(raw)) return true;
  if (["0", "false", "off", "no"].includes(raw)) return false;
  return undefined;
}

function parsePercent(raw: string): number | undefined {
  const value = Number(raw.replace(/%$/, ""));
  return Number.isFinite(value) && value >= 0 && value <= 100 ? value : undefined;
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
