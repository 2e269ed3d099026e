/**
 * Properties of the request-side parsers and codecs, on inputs fast-check generates (docs/faults.md):
 * the key header parser, the request fingerprint, the response codec and the JWT verifier.
 * Counterexamples fast-check found are kept below as regular tests.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { IdempotencyError } from "../../supabase/functions/_shared/idempotency/errors.ts";
import { getIdempotencyKey } from "../../supabase/functions/_shared/idempotency/key.ts";
import { requestFingerprint } from "../../supabase/functions/_shared/idempotency/fingerprint.ts";
import {
  decodeBody,
  encodeBody,
  fromStoredResponse,
  toStoredResponse,
} from "../../supabase/functions/_shared/idempotency/_codec.ts";
import { verifyHs256Jwt } from "../../supabase/functions/_shared/idempotency/jwt.ts";
import { signHs256 } from "../../supabase/functions/_shared/idempotency/auth_testing.ts";

const RUNS = Number(Deno.env.get("PROPERTY_RUNS") ?? 300);
const KEY_PATTERN = /^[A-Za-z0-9_-]{3,256}$/;
const keyChar = fc.constantFrom(..."ABCXYZabcxyz0189_-");
const validKey = fc.string({ unit: keyChar, minLength: 3, maxLength: 256 });

/** A request with the given header values, or null when the Fetch API itself refuses the value. */
function requestWith(headers: Record<string, string>): Request | null {
  try {
    return new Request("http://x/f", { headers });
  } catch {
    return null;
  }
}

/** The key or the error code `getIdempotencyKey` gives; any other throw fails the property. */
function keyOutcome(req: Request): { key: string | null } | { code: string } {
  try {
    return { key: getIdempotencyKey(req) };
  } catch (error) {
    if (error instanceof IdempotencyError) return { code: error.code };
    throw error;
  }
}

Deno.test("key header: any value gives a documented key or INVALID_KEY, never another error", () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" })),
      (raw) => {
        const req = requestWith({ "idempotency-key": raw });
        if (req === null) return;
        const outcome = keyOutcome(req);
        if ("key" in outcome) assert.match(outcome.key!, KEY_PATTERN);
        else assert.equal(outcome.code, "INVALID_KEY");
      },
    ),
    { numRuns: RUNS * 3 },
  );
});

Deno.test("key header: exactly the documented set is accepted, bare or as a Structured-Field string", () => {
  fc.assert(
    fc.property(
      fc.oneof(validKey, fc.string({ maxLength: 300 })),
      fc.boolean(),
      fc.constantFrom("", " ", "\t"),
      (key, quoted, pad) => {
        const req = requestWith({ "idempotency-key": `${pad}${quoted ? `"${key}"` : key}${pad}` });
        if (req === null) return;
        const outcome = keyOutcome(req);
        // HTTP strips a bare value's outer spaces and tabs; inside quotes they are part of the key.
        const expected = quoted ? key : key.replace(/^[ \t]+|[ \t]+$/g, "");
        if (KEY_PATTERN.test(expected)) assert.deepEqual(outcome, { key: expected });
        else if (!quoted || !/[\\"]/.test(key)) assert.deepEqual(outcome, { code: "INVALID_KEY" });
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("key header counterexample: a bare key's outer whitespace is not part of it", () => {
  // Found by the property above (a mistake in its first model, not in the parser): "000 " is the key "000".
  assert.deepEqual(keyOutcome(requestWith({ "idempotency-key": "000 " })!), { key: "000" });
  assert.deepEqual(keyOutcome(requestWith({ "idempotency-key": '"000 "' })!), { code: "INVALID_KEY" });
});

Deno.test("key header: both headers agree or it is KEY_CONFLICT", () => {
  fc.assert(
    fc.property(validKey, validKey, (a, b) => {
      const outcome = keyOutcome(requestWith({ "idempotency-key": a, "x-idempotency-key": `"${b}"` })!);
      assert.deepEqual(outcome, a === b ? { key: a } : { code: "KEY_CONFLICT" });
    }),
    { numRuns: RUNS },
  );
});

/** `value` as JSON text with object keys in an order and whitespace chosen by `random`. */
function shuffledJson(value: unknown, random: () => number): string {
  const space = () => [" ", "", "\n", "\t", "  "][Math.floor(random() * 5)]!;
  if (Array.isArray(value)) return `[${value.map((item) => space() + shuffledJson(item, random)).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort(() => random() - 0.5);
    const members = keys.map((key) =>
      `${space()}${JSON.stringify(key)}${space()}:${space()}${
        shuffledJson((value as Record<string, unknown>)[key], random)
      }`
    );
    return `{${members.join(",")}${space()}}`;
  }
  return JSON.stringify(value);
}

const bytes = (text: string) => new TextEncoder().encode(text);
const base = { method: "POST", path: "/functions/v1/f", caller: "user" } as const;

Deno.test("fingerprint: equivalent JSON in any key order or whitespace gives one fingerprint", () => {
  fc.assert(
    fc.property(
      fc.jsonValue(),
      fc.infiniteStream(fc.double({ min: 0, max: 0.999, noNaN: true })),
      (value, s) => {
        const it = s[Symbol.iterator]();
        const random = () => it.next().value as number;
        const a = requestFingerprint({ ...base, body: bytes(JSON.stringify(value)) });
        const b = requestFingerprint({ ...base, body: bytes(shuffledJson(value, random)) });
        assert.equal(a, b);
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("fingerprint: a change of value, path, method, function or caller changes it", () => {
  fc.assert(
    fc.property(
      fc.jsonValue(),
      fc.jsonValue(),
      fc.constantFrom("method", "path", "caller", "function"),
      (a, b, part) => {
        const one = requestFingerprint({ ...base, body: bytes(JSON.stringify(a)) });
        if (JSON.stringify(a) !== JSON.stringify(b)) {
          assert.notEqual(requestFingerprint({ ...base, body: bytes(JSON.stringify(b)) }), one);
        }
        const changed = part === "method"
          ? { ...base, method: "PUT" }
          : part === "path"
          ? { ...base, path: "/functions/v1/f?x=1" }
          : part === "function"
          ? { ...base, path: "/functions/v1/g" }
          : { ...base, caller: "service" };
        assert.notEqual(requestFingerprint({ ...changed, body: bytes(JSON.stringify(a)) }), one);
      },
    ),
    { numRuns: RUNS },
  );
});

const headerName = fc.stringMatching(/^x-[a-z0-9-]{1,20}$/);
const headerValue = fc.stringMatching(/^[!-~]([ -~]{0,40}[!-~])?$/);
const bodyStatus = fc.integer({ min: 200, max: 599 }).filter((s) => ![204, 205, 304].includes(s));

Deno.test("codec: every body and header set round-trips, compressed or not", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(fc.uint8Array({ maxLength: 5000 }), fc.string({ maxLength: 3000 }).map(bytes)),
      fc.dictionary(headerName, headerValue, { maxKeys: 8 }),
      bodyStatus,
      fc.integer({ min: 0, max: 2048 }),
      async (body, headers, status, threshold) => {
        const encoded = await encodeBody(body, { compressThresholdBytes: threshold });
        assert.deepEqual(await decodeBody(encoded.body, encoded.encoding), body);
        const stored = await toStoredResponse(
          { status, headers: new Headers(headers), body },
          { compressThresholdBytes: threshold, maxStoredBodyBytes: 1 << 20 },
        );
        const replay = await fromStoredResponse(stored);
        assert.equal(replay.status, status);
        assert.deepEqual(new Uint8Array(await replay.arrayBuffer()), body);
        for (const [name, value] of Object.entries(headers)) assert.equal(replay.headers.get(name), value);
      },
    ),
    { numRuns: Math.ceil(RUNS / 3) },
  );
});

const SECRET = "property-secret-with-at-least-32-characters";
const claims = fc.record({
  sub: fc.uuid(),
  role: fc.constantFrom("authenticated", "service_role", "anon"),
  exp: fc.integer({ min: 2_000_000_000, max: 2_100_000_000 }),
});
const tokenChar = fc.constantFrom(
  ..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ",
);

Deno.test("JWT: a token with any character changed, added or removed is never accepted", async () => {
  await fc.assert(
    fc.asyncProperty(
      claims,
      // Half the mutations hit the signature's last character, where base64url has unused bits.
      fc.oneof(fc.constant(-1), fc.nat()),
      tokenChar,
      fc.constantFrom("replace", "insert", "delete"),
      async (c, at, char, how) => {
        const token = await signHs256(c, SECRET);
        assert.deepEqual(verifyHs256Jwt(token, SECRET), { ...c });
        const i = at < 0 ? token.length - 1 : at % token.length;
        const mutated = how === "replace"
          ? token.slice(0, i) + char + token.slice(i + 1)
          : how === "insert"
          ? token.slice(0, i) + char + token.slice(i)
          : token.slice(0, i) + token.slice(i + 1);
        if (mutated === token) return;
        assert.throws(() => verifyHs256Jwt(mutated, SECRET), IdempotencyError, `accepted ${mutated}`);
      },
    ),
    { numRuns: RUNS * 2 },
  );
});

Deno.test("JWT counterexample: another spelling of the signature's last character is refused", async () => {
  // Found by the property above: "...BWY" verified as "...BWZ", "...BWa" and "...BWb" too.
  const token = await signHs256({ sub: "x", exp: 2000000000 }, SECRET);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (const char of alphabet) {
    const mutated = token.slice(0, -1) + char;
    if (mutated !== token) assert.throws(() => verifyHs256Jwt(mutated, SECRET), IdempotencyError);
  }
});
