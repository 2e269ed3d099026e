import assert from "node:assert/strict";
import { deflateSync, inflateSync } from "node:zlib";
import {
  adler32,
  checkDictionaries,
  deflateWithDictionary,
  inflateWithDictionary,
  MAX_DICTIONARY_BYTES,
} from "./_dictionary.ts";

const utf8 = (text: string) => new TextEncoder().encode(text);
const dictionary = utf8(
  '{"status":"completed","result":{"summary":"The report","keywords":[{"word":"x","count":1}]}}',
);
const answer = utf8(
  '{"status":"completed","result":{"summary":"The report on growth","keywords":[]},"id":7}',
);

Deno.test("dictionary: adler32 matches RFC 1950's checksum, also past zlib's 5552-byte run", () => {
  assert.equal(adler32(new Uint8Array(0)), 1);
  assert.equal(adler32(utf8("Wikipedia")), 0x11e60398);
  // zlib's own trailer is the Adler-32 of what it compressed
  const long = Uint8Array.from({ length: 100_000 }, (_, i) => 255 - (i * 7) % 256);
  const zlib = deflateSync(long);
  assert.equal(adler32(long), new DataView(zlib.buffer, zlib.byteOffset).getUint32(zlib.byteLength - 4));
});

Deno.test("dictionary: a body round-trips, names its dictionary and is read by standard zlib", async () => {
  const compressed = await deflateWithDictionary(answer, dictionary);
  assert.ok(compressed.byteLength < deflateSync(answer).byteLength, "the dictionary makes it smaller");
  assert.equal(compressed[1]! & 0x20, 0x20, "FDICT set");
  assert.equal(new DataView(compressed.buffer, compressed.byteOffset).getUint32(2), adler32(dictionary));
  assert.deepEqual(await inflateWithDictionary(compressed, [dictionary]), answer);
  assert.deepEqual(new Uint8Array(inflateSync(compressed, { dictionary })), answer);
});

Deno.test("dictionary: a retired dictionary listed after the current one still decodes its bodies", async () => {
  const retired = await deflateWithDictionary(answer, dictionary);
  const current = utf8('{"status":"completed","v":2}');
  assert.deepEqual(await inflateWithDictionary(retired, [current, dictionary]), answer);
});

Deno.test("dictionary: a body whose dictionary is not listed is refused, naming the one it needs", async () => {
  const compressed = await deflateWithDictionary(answer, dictionary);
  const id = adler32(dictionary).toString(16).padStart(8, "0");
  await assert.rejects(
    inflateWithDictionary(compressed, []),
    new RegExp(`dictionary ${id}.*configured: none`),
  );
  await assert.rejects(inflateWithDictionary(compressed, [utf8("other")]), new RegExp(`dictionary ${id}`));
});

Deno.test("dictionary: corrupt, truncated or dictionary-less bodies are refused", async () => {
  const compressed = await deflateWithDictionary(answer, dictionary);
  const badSum = compressed.slice();
  badSum[badSum.byteLength - 1]! ^= 1;
  await assert.rejects(inflateWithDictionary(badSum, [dictionary]), /checksum/);
  await assert.rejects(inflateWithDictionary(compressed.slice(0, -3), [dictionary]));
  await assert.rejects(inflateWithDictionary(new Uint8Array(deflateSync(answer)), [dictionary]), /preset/);
  await assert.rejects(inflateWithDictionary(utf8("not zlib at all"), [dictionary]), /preset/);
});

Deno.test("dictionary: options are checked before any work", () => {
  const [fromText] = checkDictionaries(["{}"]);
  assert.deepEqual(fromText, utf8("{}"));
  assert.throws(() => checkDictionaries([""]), RangeError);
  assert.throws(() => checkDictionaries([new Uint8Array(MAX_DICTIONARY_BYTES + 1)]), RangeError);
  assert.equal(checkDictionaries([new Uint8Array(MAX_DICTIONARY_BYTES).fill(1)]).length, 1);
  assert.throws(() => checkDictionaries([dictionary, dictionary.slice()]), /same Adler-32/);
});
