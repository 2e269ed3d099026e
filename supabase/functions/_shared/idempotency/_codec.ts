/**
 * How response bodies are stored: gzip when that pays, and the conversion between a response and the
 * {@link StoredResponse} a store keeps.
 */

import { BODY_OMITTED_HEADER, replayableHeaders } from "./headers.ts";
import type { StoredResponse } from "./store.ts";

/** A body as stored, with how it is encoded. */
export interface EncodedBody {
  /** The bytes to store. */
  body: Uint8Array;
  /** `gzip` when `body` is the gzip of the original. */
  encoding: "identity" | "gzip";
}

/** Options for {@link encodeBody}. */
export interface EncodeOptions {
  /** Bodies up to this many bytes are stored as they are: gzip's overhead would not pay. */
  compressThresholdBytes: number;
}

/** Options for {@link toStoredResponse}. */
export interface StoreResponseOptions extends EncodeOptions {
  /** The most bytes of (possibly gzipped) body stored; past it only status and headers are kept. */
  maxStoredBodyBytes: number;
}

/**
 * The gzip of `bytes`. node:zlib's one-shot call costs half the CPU of a `CompressionStream`, whose stream
 * machinery outweighs compressing a small body; it is loaded on first use, not at cold start.
 */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const { gzipSync } = await import("node:zlib");
  // a plain copy: a Buffer's `slice` is a view, and stores copy bodies with `slice`
  return new Uint8Array(gzipSync(bytes));
}

/** The bytes `gzip` compressed; rejects on corrupt input. */
export async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  const { gunzipSync } = await import("node:zlib");
  return new Uint8Array(gunzipSync(bytes));
}

/** `body` gzipped when it is larger than the threshold and gzip makes it smaller; as it is otherwise. */
export async function encodeBody(body: Uint8Array, options: EncodeOptions): Promise<EncodedBody> {
  if (body.byteLength <= options.compressThresholdBytes) return { body, encoding: "identity" };
  const compressed = await gzip(body);
  return compressed.byteLength < body.byteLength
    ? { body: compressed, encoding: "gzip" }
    : { body, encoding: "identity" };
}

/** The original bytes of a stored body. */
export function decodeBody(body: Uint8Array, encoding: EncodedBody["encoding"]): Promise<Uint8Array> {
  return encoding === "gzip" ? gunzip(body) : Promise.resolve(body);
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

/** The response a store kept, decoded; the caller adds `X-Idempotency-Replay`. */
export async function fromStoredResponse(stored: StoredResponse): Promise<Response> {
  const body = await decodeBody(stored.body, stored.encoding);
  return buildResponse(stored.status, new Headers(stored.headers), body);
}
