/**
 * Response bodies compressed against a preset dictionary: zlib (RFC 1950) with `FDICT`, whose header names
 * the dictionary by its Adler-32. A function's answers share their JSON names and fixed values; a
 * dictionary made of a few of them lets each stored body keep little more than what is unique to it (a
 * 510-byte `process-document` answer: ~190 bytes, against ~330 with brotli alone). Any zlib reads these
 * bodies given the same dictionary (Node's `inflateSync(body, { dictionary })`, Python's
 * `zlib.decompressobj(zdict=...)`).
 *
 * fflate does the deflating: Deno's node:zlib (2.9) ignores the `dictionary` option. It is imported at the
 * first body compressed or decoded this way (a literal specifier, so deploy bundles it), so functions
 * without a dictionary never load it; its browser build, because the Node one loads `worker_threads` for
 * its asynchronous API (5-12 ms to import here, against 17-147 ms).
 */

/** The most bytes of a dictionary deflate can use: its window. A longer one would be cut silently. */
export const MAX_DICTIONARY_BYTES = 32 * 1024;

/** The Adler-32 checksum of `bytes` (RFC 1950, 8.2): zlib's check of its output and a dictionary's id. */
export function adler32(bytes: Uint8Array): number {
  let a = 1, b = 0;
  // reduced every 5552 bytes, as zlib does (its NMAX): the sums stay integers below 2^32
  for (let start = 0; start < bytes.length; start += 5552) {
    const end = Math.min(start + 5552, bytes.length);
    for (let i = start; i < end; i++) {
      a += bytes[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return (b * 65536 + a) >>> 0;
}

/**
 * The dictionaries as bytes, checked: each 1 to 32 KiB, no two with the same Adler-32 (the id a stored body
 * names its dictionary by).
 *
 * @throws {RangeError} on an empty or too long dictionary, or two that share an id.
 */
export function checkDictionaries(dictionaries: readonly (Uint8Array | string)[]): readonly Uint8Array[] {
  const seen = new Map<number, number>();
  return Object.freeze(dictionaries.map((dictionary, index) => {
    const bytes = typeof dictionary === "string" ? new TextEncoder().encode(dictionary) : dictionary;
    if (bytes.byteLength === 0 || bytes.byteLength > MAX_DICTIONARY_BYTES) {
      throw new RangeError(
        `responseDictionaries[${index}] must be 1 to ${MAX_DICTIONARY_BYTES} bytes, got ${bytes.byteLength}`,
      );
    }
    const id = adler32(bytes);
    const twin = seen.get(id);
    if (twin !== undefined) {
      throw new RangeError(
        `responseDictionaries[${index}] has the same Adler-32 as responseDictionaries[${twin}]` +
          " (the same bytes?): a stored body could not tell them apart",
      );
    }
    seen.set(id, index);
    return bytes;
  }));
}

/** `bytes` as zlib with `dictionary` preset (level 9: on answers of a few hundred bytes it costs ~0.1 ms). */
export async function deflateWithDictionary(bytes: Uint8Array, dictionary: Uint8Array): Promise<Uint8Array> {
  const { zlibSync } = await import("npm:fflate@0.8.2/browser");
  return zlibSync(bytes, { level: 9, dictionary });
}

/**
 * The bytes `deflateWithDictionary` compressed with whichever of `dictionaries` the body's header names.
 * Checks what fflate does not: the dictionary's id, and the Adler-32 of the output against the trailer.
 *
 * @throws {Error} when the body is not zlib with a dictionary, names none of `dictionaries`, or is corrupt.
 */
export async function inflateWithDictionary(
  bytes: Uint8Array,
  dictionaries: readonly Uint8Array[],
): Promise<Uint8Array> {
  if (bytes.byteLength < 10 || (bytes[1]! & 0x20) === 0 || ((bytes[0]! << 8) | bytes[1]!) % 31 !== 0) {
    throw new Error("corrupt zdict body: not zlib with a preset dictionary");
  }
  const id = readUint32(bytes, 2);
  const dictionary = dictionaries.find((candidate) => adler32(candidate) === id);
  if (dictionary === undefined) {
    throw new Error(
      `stored body was compressed with dictionary ${hex(id)}, which is not in responseDictionaries` +
        ` (configured: ${dictionaries.map((d) => hex(adler32(d))).join(", ") || "none"})`,
    );
  }
  const { unzlibSync } = await import("npm:fflate@0.8.2/browser");
  const out: Uint8Array = unzlibSync(bytes, { dictionary });
  if (adler32(out) !== readUint32(bytes, bytes.byteLength - 4)) {
    throw new Error("corrupt zdict body: its checksum does not match");
  }
  return out;
}

function readUint32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function hex(id: number): string {
  return id.toString(16).padStart(8, "0");
}
