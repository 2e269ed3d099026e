/**
 * How response bodies are stored: compressed when that pays (brotli, or against the function's response
 * dictionary when it has one, gzip for large bodies), and the conversion between a response and the
 * {@link StoredResponse} a store keeps.
 */

import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync, gzipSync } from "node:zlib";
import { deflateWithDictionary, inflateWithDictionary } from "./_dictionary.ts";
import { BODY_OMITTED_HEADER, REPLAY_HEADER, replayableHeaders } from "./headers.ts";
import type { BodyEncoding, StoredResponse } from "./store.ts";

/** A body as stored, with how it is encoded. */
export interface EncodedBody {
  /** The bytes to store. */
  body: Uint8Array;
  /** How `body` holds the original: `identity` when it is the original. */
  encoding: BodyEncoding;
}

/** Options for {@link encodeBody}. */
export interface EncodeOptions {
  /** Bodies up to this many bytes are stored as they are: compression's overhead would not pay. */
  compressThresholdBytes: number;
  /**
   * The function's response dictionaries: bodies up to 64 KiB are compressed against the first (`zdict`)
   * instead of with brotli. None by default.
   */
  responseDictionaries?: readonly Uint8Array[];
}

/** Options for {@link toStoredResponse}. */
export interface StoreResponseOptions extends EncodeOptions {
  /** The most bytes of (possibly compressed) body stored; past it only status and headers are kept. */
  maxStoredBodyBytes: number;
}

/**
 * The gzip of `bytes`. node:zlib's one-shot call costs half the CPU of a `CompressionStream`, whose stream
 * machinery outweighs compressing a small body.
 */
export function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  // a plain copy: a Buffer's `slice` is a view, and stores copy bodies with `slice`
  return Promise.resolve(new Uint8Array(gzipSync(bytes)));
}

/** The bytes `gzip` compressed; rejects on corrupt input. */
export function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  try {
    return Promise.resolve(new Uint8Array(gunzipSync(bytes)));
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * Brotli's quality: at 5 a 510-byte JSON answer is stored in 328 bytes (gzip: 372) for ~0.1 ms; 10 and 11
 * save 25 bytes more for 10 to 20 times the CPU (docs/scaling.md, "Bytes per key").
 */
const BROTLI_QUALITY = 5;
/**
 * Bodies up to this size are compressed with brotli, larger ones with gzip: brotli at quality 5 costs about
 * five times gzip's CPU per byte here (1 MB: 145 ms against 30, on the request's own thread), while the
 * bytes it saves count most on the many small answers a table of keys holds.
 */
const BROTLI_MAX_BYTES = 64 * 1024;

/** The brotli of `bytes` (quality 5). */
export function brotli(bytes: Uint8Array): Uint8Array {
  const out = brotliCompressSync(bytes, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.byteLength,
    },
  });
  // a plain Uint8Array of its own: a Buffer's slice() would share memory with it
  return new Uint8Array(out);
}

/**
 * The bytes `brotli` compressed; throws on input that is not brotli. Deno's node:zlib (2.9) returns what it
 * decoded so far, often nothing, for corrupt or truncated brotli where Node throws; {@link encodeBody} never
 * stores an empty body compressed, so an empty result is taken as corrupt. (Stores hand back exactly the
 * bytes they were given; brotli, unlike gzip, carries no checksum of its own.)
 */
export function unbrotli(bytes: Uint8Array): Uint8Array {
  const out = brotliDecompressSync(bytes);
  if (out.byteLength === 0) throw new Error("corrupt brotli body: it decodes to nothing");
  return new Uint8Array(out);
}

/**
 * `body` compressed when it is larger than the threshold and compression makes it smaller (against the
 * first response dictionary, else brotli, up to 64 KiB; gzip past it); as it is otherwise.
 */
export async function encodeBody(body: Uint8Array, options: EncodeOptions): Promise<EncodedBody> {
  if (body.byteLength <= options.compressThresholdBytes) return { body, encoding: "identity" };
  const dictionary = options.responseDictionaries?.[0];
  const compressed: EncodedBody = body.byteLength > BROTLI_MAX_BYTES
    ? { body: await gzip(body), encoding: "gzip" }
    : dictionary === undefined
    ? { body: brotli(body), encoding: "br" }
    : { body: await deflateWithDictionary(body, dictionary), encoding: "zdict" };
  return compressed.body.byteLength < body.byteLength ? compressed : { body, encoding: "identity" };
}

/**
 * The original bytes of a stored body; rejects on corrupt input, and on a `zdict` body whose dictionary is
 * not among `responseDictionaries`.
 */
export async function decodeBody(
  body: Uint8Array,
  encoding: BodyEncoding,
  responseDictionaries: readonly Uint8Array[] = [],
): Promise<Uint8Array> {
  switch (encoding) {
    case "br":
      return unbrotli(body);
    case "zdict":
      return await inflateWithDictionary(body, responseDictionaries);
    case "gzip":
      return await gunzip(body);
    case "identity":
      return body;
  }
}

/** What a store keeps of a response; `body` is the bytes the client received. */
export async function toStoredResponse(
  response: { status: number; headers: Headers; body: Uint8Array },
  options: StoreResponseOptions,
): Promise<StoredResponse> {
  const headers = replayableHeaders(response.headers);
  const encoded = await encodeBody(response.body, options);
  if (encoded.body.byteLength <= options.maxStoredBodyBytes) {
    return { status: response.status, headers, ...encoded };
  }
  // Too large to store: keep the outcome so the work never runs twice, and say the body is missing.
  return {
    status: response.status,
    headers: { ...headers, [BODY_OMITTED_HEADER]: "true" },
    body: new Uint8Array(0),
    encoding: "identity",
  };
}

/** The statuses whose responses may not have a body (the Fetch API throws if given one). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/** A `Response` from parts, leaving the body out where the status forbids one. */
export function buildResponse(status: number, headers: Headers, body: Uint8Array): Response {
  const content = NULL_BODY_STATUSES.has(status) ? null : new Uint8Array(body);
  return new Response(content, { status, headers });
}

/**
 * The response a store kept, as a replay: decoded (with the function's dictionaries) and marked
 * `X-Idempotency-Replay: true`.
 */
export async function fromStoredResponse(
  stored: StoredResponse,
  responseDictionaries: readonly Uint8Array[] = [],
): Promise<Response> {
  const body = await decodeBody(stored.body, stored.encoding, responseDictionaries);
  const response = buildResponse(stored.status, new Headers(stored.headers), body);
  response.headers.set(REPLAY_HEADER, "true");
  return response;
}
