import assert from "node:assert/strict";
import { canonicalJson, requestFingerprint } from "./fingerprint.ts";

const text = (value: string) => new TextEncoder().encode(value);

function fingerprint(overrides: { method?: string; path?: string; body?: string | Uint8Array } = {}) {
  const body = overrides.body ?? '{"amount":42}';
  return requestFingerprint({
    method: overrides.method ?? "POST",
    path: overrides.path ?? "/process-document",
    body: typeof body === "string" ? text(body) : body,
    contentType: "application/json",
  });
}

Deno.test("canonicalJson: object keys are sorted, recursively", () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [1, 2], c: null } }), '{"a":{"c":null,"d":[1,2]},"b":1}');
});

Deno.test("canonicalJson: arrays keep their order; undefined members are left out", () => {
  assert.equal(canonicalJson([3, 1, 2]), "[3,1,2]");
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  assert.equal(canonicalJson({ a: undefined, b: [undefined] }), '{"b":[null]}');
});

Deno.test("canonicalJson: strings are escaped as JSON, dates as their JSON form", () => {
  assert.equal(canonicalJson({ 'we"ird': "line\nbreak" }), '{"we\\"ird":"line\\nbreak"}');
  assert.equal(canonicalJson(new Date(0)), '"1970-01-01T00:00:00.000Z"');
});

Deno.test("fingerprint: 64 hex characters, stable for the same request", async () => {
  const a = await fingerprint();
  assert.match(a, /^[0-9a-f]{64}$/);
  assert.equal(a, await fingerprint());
});

Deno.test("fingerprint: key order and whitespace of a JSON body do not matter", async () => {
  assert.equal(
    await fingerprint({ body: '{"a":1,"b":{"x":true,"y":[1,2]}}' }),
    await fingerprint({ body: '{ "b": { "y": [1, 2], "x": true }, "a": 1 }' }),
  );
});

Deno.test("fingerprint: nested values and array order do matter", async () => {
  const base = await fingerprint({ body: '{"a":{"b":{"c":1}}}' });
  assert.notEqual(base, await fingerprint({ body: '{"a":{"b":{"c":2}}}' }));
  assert.notEqual(await fingerprint({ body: '{"a":[1,2]}' }), await fingerprint({ body: '{"a":[2,1]}' }));
});

Deno.test("fingerprint: numbers beyond double precision stay distinct", async () => {
  assert.notEqual(
    await fingerprint({ body: '{"amount":12345678901234567890}' }),
    await fingerprint({ body: '{"amount":12345678901234567891}' }),
  );
});

Deno.test("fingerprint: method, path and body each change it", async () => {
  const base = await fingerprint();
  assert.notEqual(base, await fingerprint({ method: "PUT" }));
  assert.notEqual(base, await fingerprint({ path: "/start-training" }));
  assert.notEqual(base, await fingerprint({ body: '{"amount":43}' }));
  assert.equal(base, await fingerprint({ method: "post" }), "methods compare upper-cased");
});

Deno.test("fingerprint: non-JSON bodies are hashed as bytes", async () => {
  const bytes = new Uint8Array([0xff, 0x00, 0x01]);
  assert.equal(await fingerprint({ body: bytes }), await fingerprint({ body: bytes.slice() }));
  assert.notEqual(
    await fingerprint({ body: bytes }),
    await fingerprint({ body: new Uint8Array([0xff, 0x00]) }),
  );
  assert.notEqual(await fingerprint({ body: "a=1&b=2" }), await fingerprint({ body: "b=2&a=1" }));
});

Deno.test("fingerprint: parts are framed, so moving bytes between them changes it", async () => {
  assert.notEqual(
    await fingerprint({ path: "/ab", body: "c" }),
    await fingerprint({ path: "/a", body: "bc" }),
  );
  assert.notEqual(
    await fingerprint({ method: "POST", path: "/x" }),
    await fingerprint({ method: "POS", path: "T/x" }),
  );
  assert.notEqual(await fingerprint({ body: "" }), await fingerprint({ body: '""' }));
});

Deno.test("fingerprint: a JSON body matches whatever its declared content type", async () => {
  const declared = await requestFingerprint({ method: "POST", path: "/f", body: text('{"b":1,"a":2}') });
  const json = await requestFingerprint({
    method: "POST",
    path: "/f",
    body: text('{"a":2,"b":1}'),
    contentType: "application/json; charset=utf-8",
  });
  assert.equal(declared, json);
});

Deno.test("fingerprint: the hashed layout is stable (stored records keep matching their retries)", () => {
  // computed before the plain-parse fast path; a change here would answer every retry of a stored key 422
  const golden: [string, string][] = [
    [
      '{"title":"Q3 report","content":"One sentence."}',
      "8865e5270e20be93a75a0c7f53734e1376512f0484e0435f03c24244391c1e8d",
    ],
    [
      '{"amount":42,"tags":["a",{"n":1.50}]}',
      "ee6b740673ddf1ce982349370716659d357315085ac4eeb20c5690543104b1b6",
    ],
    [
      '{"b":[true,null,"x"],"a":{"__proto__":"p"}}',
      "33a703130b1b5d3311ee2b676cf211ae556916e19714b0a1c965dc63f14f527a",
    ],
    ['{"n":12345678901234567891}', "fec1550cf997d15637058d8de9a5555464262ca86b8ea0a3b0b884c35a46fb55"],
    ['{"e":1e2,"f":100}', "358aed257baf7343145da0acad11dcdedaa97bff3aa8b111364e0c2bf8ac1d80"],
    ["not json", "56b288a3db64e051fb7de1d043ed0dd03688f0fffd6a2ad9660ba8ee8a10d1c5"],
    // past the plain parse's depth, and too deep for any parse (hashed as bytes)
    ["[".repeat(100) + "]".repeat(100), "d74e85b8c4b369a94dfe6df6243edb3a988ac817e68744aae384592ad401f25f"],
    [
      "[".repeat(100_000) + "]".repeat(100_000),
      "427cd1de2df25c9d5e0bae7469d887145b555651f99bd5c220ab5dd6b2c7251f",
    ],
  ];
  for (const [body, expected] of golden) {
    assert.equal(
      requestFingerprint({ method: "POST", path: "/charge?x=1", body: text(body), caller: "user" }),
      expected,
      body,
    );
  }
});
