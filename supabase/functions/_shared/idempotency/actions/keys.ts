/**
 * Action keys: an action is known by what it does, `signalId:actionType:target:paramsHash`, where
 * `paramsHash` is the first 16 hex characters of SHA-256 over the canonical JSON of its parameters (key
 * order and whitespace do not matter). Tool keys (a tool name plus its input) and explicit keys are the
 * other two ways to name an action.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { IdempotencyError } from "../errors.ts";
import { canonicalJson } from "../fingerprint.ts";

/** What an action is: where it came from, what it does, to what, with which parameters. */
export interface ActionIdentity {
  /** The event or request that caused the action (a webhook event, a signal, a job id). */
  signalId: string;
  /** What the action does, e.g. `create_task`. Also accepted as `action`, the seeds' name. */
  actionType?: string;
  /** The seeds' name for {@link ActionIdentity.actionType}. */
  action?: string;
  /** Where the action lands, e.g. `trello`, `slack`, a table name. */
  target: string;
  /** The parameters; any JSON value. @default {} */
  params?: unknown;
}

/** The four parts of an action key, and the parameters hash alone. */
export interface ParsedActionKey {
  /** The signal id, unescaped. */
  signalId: string;
  /** The action type, unescaped. */
  actionType: string;
  /** The target, unescaped. */
  target: string;
  /** 16 lower-case hex characters. */
  paramsHash: string;
}

/** What a record knows about its action; `null` parts are unknown (explicit keys). */
export interface ActionMeta {
  /** The action type, or the tool name of a tool key. */
  actionType: string | null;
  /** The target; `tool` for a tool key. */
  target: string | null;
  /** The signal id; `null` for tool keys and explicit keys without one. */
  signalId: string | null;
  /** The parameters hash; `null` for explicit keys. */
  paramsHash: string | null;
}

/** Longest key accepted by every store. */
export const MAX_ACTION_KEY_LENGTH = 512;
const PARAMS_HASH = /^[0-9a-f]{16}$/;
const TOOL_PREFIX = "tool";

/**
 * The 16-hex-character hash of `params`: SHA-256 over their canonical JSON, first 16 characters.
 *
 * @param params Any JSON value; `undefined` hashes as `{}`.
 * @returns 16 lower-case hex characters.
 * @example Same parameters in another order
 * ```ts
 * hashParams({ a: 1, b: 2 }) === hashParams({ b: 2, a: 1 }); // true
 * ```
 */
export function hashParams(params: unknown): string {
  return createHash("sha256").update(canonicalJson(params ?? {})).digest("hex").slice(0, 16);
}

/**
 * The key of an action: `signalId:actionType:target:paramsHash`. A `:` or `%` inside a part is escaped
 * (`%3A`, `%25`), so any part round-trips through {@link parseIdempotencyKey}.
 *
 * @param action The action's identity.
 * @returns The action key.
 * @throws {IdempotencyError} `INVALID_ACTION` when a part is empty or the key would be too long.
 * @example A Trello card for a signal
 * ```ts
 * generateActionKey({ signalId: "signal-123", actionType: "create_task", target: "trello", params: { name: "Review" } });
 * // "signal-123:create_task:trello:<16 hex>"
 * ```
 */
export function generateActionKey(action: ActionIdentity): string {
  const actionType = action.actionType ?? action.action;
  const parts = [
    part("signalId", action.signalId),
    part("actionType", actionType),
    part("target", action.target),
    hashParams(action.params),
  ];
  return checkKeyLength(parts.join(":"));
}

/**
 * The seeds' name for {@link generateActionKey}.
 *
 * @param action The action's identity.
 * @returns The action key.
 * @throws {IdempotencyError} `INVALID_ACTION` when a part is empty or the key would be too long.
 * @example
 * ```ts
 * generateIdempotencyKey({ signalId: "s-1", action: "notify", target: "slack", params: {} });
 * ```
 */
export const generateIdempotencyKey: (action: ActionIdentity) => string = generateActionKey;

/**
 * The key of a tool call from its name and input alone: `tool:<name>:<paramsHash>` (WeatherVane's keys).
 *
 * @param toolName The tool, e.g. `fs_write`.
 * @param input The tool's input; key order does not matter.
 * @returns The tool key.
 * @throws {IdempotencyError} `INVALID_ACTION` when the name is empty.
 * @example
 * ```ts
 * toolKey("fs_write", { path: "a.txt", content: "x" }); // "tool:fs_write:<16 hex>"
 * ```
 */
export function toolKey(toolName: string, input: unknown): string {
  return checkKeyLength(`${TOOL_PREFIX}:${part("toolName", toolName)}:${hashParams(input)}`);
}

/**
 * Splits an action key back into its parts.
 *
 * @param key A key made by {@link generateActionKey}.
 * @returns Its unescaped parts.
 * @throws {IdempotencyError} `INVALID_ACTION` when `key` does not have four non-empty parts ending in a
 * 16-hex-character hash, or holds a broken escape.
 * @example
 * ```ts
 * parseIdempotencyKey("signal-123:create_task:trello:0123456789abcdef").target; // "trello"
 * ```
 */
export function parseIdempotencyKey(key: string): ParsedActionKey {
  const parsed = tryParseActionKey(key);
  if (!parsed) {
    throw new IdempotencyError(
      "INVALID_ACTION",
      "an action key is signalId:actionType:target:paramsHash with four non-empty parts and a " +
        "16-hex-character hash",
    );
  }
  return parsed;
}

/**
 * Whether two parameter sets hash the same (and so make the same key).
 *
 * @param a First parameters.
 * @param b Second parameters.
 * @returns `true` when their canonical JSON is equal.
 * @example
 * ```ts
 * paramsAreEquivalent({ name: "Task", id: 123 }, { id: 123, name: "Task" }); // true
 * ```
 */
export function paramsAreEquivalent(a: unknown, b: unknown): boolean {
  return canonicalJson(a ?? {}) === canonicalJson(b ?? {});
}

/**
 * What a key says about its action: the parts of an action key, the tool name of a tool key, or nothing
 * for any other (explicit) key.
 *
 * @param key Any action, tool or explicit key.
 * @returns The metadata a record of this key carries when none is given.
 * @example
 * ```ts
 * metaFromKey("tool:fs_write:0123456789abcdef").actionType; // "fs_write"
 * ```
 */
export function metaFromKey(key: string): ActionMeta {
  const parsed = tryParseActionKey(key);
  if (parsed) return parsed;
  const tool = /^tool:([^:]+):([0-9a-f]{16})$/.exec(key);
  if (tool?.[1] !== undefined && tool[2] !== undefined) {
    const name = unescapePart(tool[1]);
    if (name !== null) return { actionType: name, target: TOOL_PREFIX, signalId: null, paramsHash: tool[2] };
  }
  return { actionType: null, target: null, signalId: null, paramsHash: null };
}

/**
 * Checks an explicit key: 1-512 characters without control characters.
 *
 * @param key The key.
 * @returns The key.
 * @throws {IdempotencyError} `INVALID_ACTION` otherwise.
 * @example
 * ```ts
 * checkActionKey("invoice-42-upload");
 * ```
 */
export function checkActionKey(key: unknown): string {
  if (typeof key !== "string" || key.length === 0) {
    throw new IdempotencyError("INVALID_ACTION", "an action key is a non-empty string");
  }
  return checkKeyLength(key);
}

function tryParseActionKey(key: string): ParsedActionKey | null {
  if (typeof key !== "string") return null;
  const parts = key.split(":");
  if (parts.length !== 4) return null;
  const [signalId, actionType, target, paramsHash] = parts.map((p) => p === "" ? null : unescapePart(p));
  if (!signalId || !actionType || !target || !paramsHash || !PARAMS_HASH.test(paramsHash)) return null;
  return { signalId, actionType, target, paramsHash };
}

function part(name: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new IdempotencyError("INVALID_ACTION", `${name} must be a non-empty string`);
  }
  return value.replaceAll("%", "%25").replaceAll(":", "%3A");
}

function unescapePart(value: string): string | null {
  if (/%(?!25|3A)/.test(value)) return null;
  return value.replaceAll("%3A", ":").replaceAll("%25", "%");
}

/** At most 512 characters and no control characters, so every store (and a log line) can hold it. */
function checkKeyLength(key: string): string {
  if (key.length > MAX_ACTION_KEY_LENGTH) {
    throw new IdempotencyError(
      "INVALID_ACTION",
      `an action key is at most ${MAX_ACTION_KEY_LENGTH} characters`,
    );
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) {
    throw new IdempotencyError("INVALID_ACTION", "an action key may not contain control characters");
  }
  return key;
}
