/**
 * Pure request validation for the edge functions: each helper reads one field of a parsed JSON object and
 * returns it typed, or throws 400 `INVALID_REQUEST` with a message that names the field.
 */

import { FunctionError } from "./http.ts";

/** A parsed JSON object. */
export type JsonObject = Record<string, unknown>;

/** The 400 `INVALID_REQUEST` error for `field` (a dotted path) with `problem`. */
export function invalidField(field: string, problem: string): FunctionError {
  return new FunctionError("INVALID_REQUEST", `${field}: ${problem}`);
}

/** Parses `text` as a JSON object; bad JSON or another JSON value is a 400 naming `body`. */
export function parseJsonObject(text: string): JsonObject {
  if (text.trim() === "") throw invalidField("body", "must be a JSON object, got an empty body");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw invalidField("body", `is not valid JSON (${(error as Error).message})`);
  }
  return requireObject(value, "body");
}

/** `value` as a JSON object (not an array, not null), else a 400 naming `field`. */
export function requireObject(value: unknown, field: string): JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidField(field, `must be an object, got ${describe(value)}`);
  }
  return value as JsonObject;
}

/** Throws a 400 naming the first key of `object` that is not in `allowed`. */
export function rejectUnknownFields(object: JsonObject, allowed: readonly string[], prefix = ""): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      throw invalidField(`${prefix}${key}`, `is not a known field (expected one of: ${allowed.join(", ")})`);
    }
  }
}

/** Limits for {@link requireString}. */
export interface StringRules {
  /** Fewest characters after trimming; default 1. */
  min?: number;
  /** Most characters; default unlimited. */
  max?: number;
  /** A pattern the whole value must match, with a human description of it. */
  pattern?: { regex: RegExp; description: string };
}

/** `object[field]` as a string that is not blank, within `rules`; else a 400 naming the field. */
export function requireString(object: JsonObject, field: string, rules: StringRules = {}): string {
  const value = object[field];
  if (value === undefined || value === null) throw invalidField(field, "is required");
  if (typeof value !== "string") throw invalidField(field, `must be a string, got ${describe(value)}`);
  const min = rules.min ?? 1;
  if (value.trim().length < min) {
    throw invalidField(field, min === 1 ? "must not be blank" : `must have at least ${min} characters`);
  }
  if (rules.max !== undefined && value.length > rules.max) {
    throw invalidField(field, `must have at most ${rules.max} characters, got ${value.length}`);
  }
  if (rules.pattern && !rules.pattern.regex.test(value)) {
    throw invalidField(field, `must be ${rules.pattern.description}`);
  }
  return value;
}

/** Like {@link requireString}, but `fallback` when the field is absent or null. */
export function optionalString(
  object: JsonObject,
  field: string,
  fallback: string,
  rules: StringRules = {},
): string {
  return object[field] === undefined || object[field] === null
    ? fallback
    : requireString(object, field, rules);
}

/** Limits for {@link requireNumber} and {@link requireInteger}. */
export interface NumberRules {
  /** Smallest allowed value (inclusive). */
  min?: number;
  /** Largest allowed value (inclusive). */
  max?: number;
  /** The value must be greater than this. */
  greaterThan?: number;
}

/** `object[field]` as a finite number within `rules`; else a 400 naming `path` (default the field). */
export function requireNumber(
  object: JsonObject,
  field: string,
  rules: NumberRules = {},
  path = field,
): number {
  const value = object[field];
  if (value === undefined || value === null) throw invalidField(path, "is required");
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw invalidField(path, `must be a number, got ${describe(value)}`);
  }
  if (rules.greaterThan !== undefined && !(value > rules.greaterThan)) {
    throw invalidField(path, `must be greater than ${rules.greaterThan}, got ${value}`);
  }
  if (rules.min !== undefined && value < rules.min) {
    throw invalidField(path, `must be at least ${rules.min}, got ${value}`);
  }
  if (rules.max !== undefined && value > rules.max) {
    throw invalidField(path, `must be at most ${rules.max}, got ${value}`);
  }
  return value;
}

/** `object[field]` as an integer within `rules`; else a 400 naming `path` (default the field). */
export function requireInteger(
  object: JsonObject,
  field: string,
  rules: NumberRules = {},
  path = field,
): number {
  const value = requireNumber(object, field, rules, path);
  if (!Number.isInteger(value)) throw invalidField(path, `must be a whole number, got ${value}`);
  return value;
}

/** Like {@link requireInteger}, but `fallback` when the field is absent or null. */
export function optionalInteger(
  object: JsonObject,
  field: string,
  fallback: number,
  rules: NumberRules = {},
): number {
  return object[field] === undefined || object[field] === null
    ? fallback
    : requireInteger(object, field, rules);
}

/** `object[field]` as one of `choices`; else a 400 naming the field and the choices. */
export function requireChoice<T extends string>(object: JsonObject, field: string, choices: readonly T[]): T {
  const value = object[field];
  if (value === undefined || value === null) throw invalidField(field, "is required");
  if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
    throw invalidField(field, `must be one of ${choices.join(", ")}, got ${describe(value)}`);
  }
  return value as T;
}

/** Limits for {@link optionalStringList}. */
export interface ListRules {
  /** Fewest items; default 1. */
  min?: number;
  /** Most items. */
  max?: number;
  /** Only these values are allowed. */
  choices?: readonly string[];
  /** Most characters per item. */
  maxItemLength?: number;
}

/**
 * `object[field]` as a list of distinct non-blank strings within `rules`, or `fallback` when absent or null;
 * else a 400 naming the field (or the offending item, as `field[i]`).
 */
export function optionalStringList(
  object: JsonObject,
  field: string,
  fallback: readonly string[],
  rules: ListRules = {},
): string[] {
  const value = object[field];
  if (value === undefined || value === null) return [...fallback];
  if (!Array.isArray(value)) throw invalidField(field, `must be an array of strings, got ${describe(value)}`);
  const min = rules.min ?? 1;
  if (value.length < min) throw invalidField(field, `must have at least ${min} item${min === 1 ? "" : "s"}`);
  if (rules.max !== undefined && value.length > rules.max) {
    throw invalidField(field, `must have at most ${rules.max} items, got ${value.length}`);
  }
  const seen = new Set<string>();
  value.forEach((item, i) => {
    const path = `${field}[${i}]`;
    if (typeof item !== "string" || item.trim() === "") {
      throw invalidField(path, `must be a non-blank string, got ${describe(item)}`);
    }
    if (rules.choices && !rules.choices.includes(item)) {
      throw invalidField(path, `must be one of ${rules.choices.join(", ")}, got "${item}"`);
    }
    if (rules.maxItemLength !== undefined && item.length > rules.maxItemLength) {
      throw invalidField(path, `must have at most ${rules.maxItemLength} characters`);
    }
    if (seen.has(item)) throw invalidField(path, `repeats "${item}"`);
    seen.add(item);
  });
  return value as string[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `object[field]` as a lower-case UUID, or `null` when absent or null; else a 400 naming the field. */
export function optionalUuid(object: JsonObject, field: string): string | null {
  const value = object[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || !UUID.test(value)) {
    throw invalidField(field, `must be a UUID, got ${describe(value)}`);
  }
  return value.toLowerCase();
}

/** A short description of a JSON value for error messages. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return value.length > 40 ? "a string" : JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${value}`;
  return typeof value === "object" ? "an object" : typeof value;
}
