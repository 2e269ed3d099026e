/**
 * The request fingerprint: SHA-256 over method, path and body, so that reusing a key for another request is
 * detected (422) instead of replaying an answer to a different question.
 *
 * A public import path of its own: the wrappers fingerprint every request themselves; code that claims
 * keys with the direct calls and wants the same 422 for a reused key imports {@link requestFingerprint}.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";

/**
 * What the fingerprint covers.
 *
 * @example What is hashed
 * ```ts
 * import { type FingerprintInput, requestFingerprint } from "./fingerprint.ts";
 *
 * const input: FingerprintInput = { method: "POST", path: "/charge?amount=1", body: new Uint8Array() };
 * console.assert(requestFingerprint(input).length === 64);
 * ```
 */
export interface FingerprintInput {
  /** The HTTP method; compared upper-cased. */
  method: string;
  /** The URL path with its query string (`/charge?amount=1`). */
  path: string;
  /** The request body bytes, exactly as received. */
  body: Uint8Array;
  /**
   * The request's `Content-Type`. Informational: a body is treated as JSON when it parses as JSON, so a
   * client that forgets or varies the header still matches its own retries.
   *
   * @default {null}
   */
  contentType?: string | null;
  /**
   * Who asks, beyond the user id the key is scoped by: `service` and `anonymous` callers share the scope of
   * calls without a user, and must never be served each other's stored responses. Default `""`.
   *
   * @default {""}
   */
  caller?: string;
}

/** A JSON number kept as its source text: parsing to a double would merge e.g. 2^53 and 2^53 + 1. */
class SourceNumber {
  constructor(readonly source: string) {}
}

/** Bumped if the hashed layout ever changes, so old and new fingerprints never compare equal by accident. */
const FINGERPRINT_VERSION = "idempotency-fingerprint/v1";

/**
 * `value` as JSON with every object's keys sorted (recursively), so two serialisations of the same object
 * compare equal. Arrays keep their order; `undefined` members are left out, as `JSON.stringify` does.
 *
 * @param value A JSON value.
 * @returns Its canonical text.
 * @example Key order does not matter
 * ```ts
 * import { canonicalJson } from "./fingerprint.ts";
 *
 * console.assert(canonicalJson({ b: 1, a: [2] }) === canonicalJson({ a: [2], b: 1 }));
 * ```
 */
export function canonicalJson(value: unknown): string {
  if (value instanceof SourceNumber) return value.source;
  if (hasToJson(value)) return canonicalJson(value.toJSON());
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item ?? null)).join(",")}]`;
  if (value !== null && typeof value === "object") return canonicalObject(value as Record<string, unknown>);
  return JSON.stringify(value) ?? "null";
}

/** Dates and other objects that define their own JSON form, as `JSON.stringify` honours it. */
function hasToJson(value: unknown): value is { toJSON(): unknown } {
  return value !== null && typeof value === "object" &&
    typeof (value as { toJSON?: unknown }).toJSON === "function";
}

function canonicalObject(object: Record<string, unknown>): string {
  const members = Object.keys(object)
    .filter((key) => object[key] !== undefined)
    .sort()
    .map((key) => `${JSON.stringify(key)}:${canonicalJson(object[key])}`);
  return `{${members.join(",")}}`;
}

/**
 * The hex SHA-256 fingerprint of a request. A body that parses as JSON is hashed in canonical form (key
 * order and whitespace do not matter; numbers compare by their exact text); any other body as its bytes.
 * Each part is framed as a netstring (`<length in bytes>:<bytes>,`), so no two different requests hash the
 * same bytes. node:crypto hashes synchronously; WebCrypto's digest costs a thread-pool hop per request. The
 * framed text parts go to the hash as one string (UTF-8), which hashes the same bytes as framing each part
 * on its own, with one call instead of eighteen: this runs on every keyed request.
 *
 * @param input Method, path with query, body, and the caller kind.
 * @returns 64 hex characters.
 * @example The same JSON in another order matches
 * ```ts
 * import { requestFingerprint } from "./fingerprint.ts";
 *
 * const body = (text: string) => new TextEncoder().encode(text);
 * const a = requestFingerprint({ method: "POST", path: "/charge", body: body('{"a":1,"b":2}') });
 * const b = requestFingerprint({ method: "post", path: "/charge", body: body('{ "b": 2, "a": 1 }') });
 * console.assert(a === b);
 * ```
 */
export function requestFingerprint(input: FingerprintInput): string {
  const json = parseJson(input.body);
  const text = [
    FINGERPRINT_VERSION,
    input.method.toUpperCase(),
    input.path,
    input.caller ?? "",
    json === undefined ? "bytes" : "json",
  ].map(netstring).join("");
  const hash = createHash("sha256").update(text);
  if (json === undefined) hash.update(`${input.body.byteLength}:`).update(input.body).update(",");
  else hash.update(netstring(canonicalJson(json)));
  return hash.digest("hex");
}

/** `<UTF-8 byte length>:<value>,` */
function netstring(value: string): string {
  return `${Buffer.byteLength(value, "utf8")}:${value},`;
}

/** Stateless between calls (`decode` without `stream`), so one instance serves every request. */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The parsed body, with numbers as {@link SourceNumber}, or `undefined` when it is not UTF-8 JSON (or too
 * deep for the reviver). Parsed plainly first: a reviver makes `JSON.parse` about five times slower, and a
 * shallow body without numbers parses to the same value either way. Anything else takes the reviver's path,
 * so every body keeps the fingerprint it always had.
 */
function parseJson(body: Uint8Array): unknown {
  try {
    const text = UTF8.decode(body);
    const plain: unknown = JSON.parse(text);
    return needsReviver(plain, 0) ? JSON.parse(text, keepNumberSource as Reviver) : plain;
  } catch {
    return undefined;
  }
}

/** Nesting past which a body takes the reviver's path, whose stack limit decides as it always did. */
const PLAIN_PARSE_MAX_DEPTH = 64;

/** Whether a parsed JSON value holds a number anywhere, or nests deeper than the plain path goes. */
function needsReviver(value: unknown, depth: number): boolean {
  if (typeof value === "number") return true;
  if (value === null || typeof value !== "object") return false;
  if (depth >= PLAIN_PARSE_MAX_DEPTH) return true;
  for (const item of Array.isArray(value) ? value : Object.values(value)) {
    if (needsReviver(item, depth + 1)) return true;
  }
  return false;
}

type Reviver = (this: unknown, key: string, value: unknown) => unknown;

/** A `JSON.parse` reviver; `context.source` (the raw text of a primitive) is standard since ES2025. */
function keepNumberSource(_key: string, value: unknown, context?: { source?: string }): unknown {
  return typeof value === "number" ? new SourceNumber(context?.source ?? String(value)) : value;
}
