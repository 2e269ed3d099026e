/**
 * Calls an edge function idempotently: one key per operation, sent on every attempt, retried with
 * exponential backoff and full jitter on answers that are safe to retry. Plain web APIs only (`fetch`,
 * `AbortController`, `setTimeout`, `crypto.randomUUID`), so it runs in browsers, Deno and Node 18+.
 */

import { isRetryableStatus, nextDelayMs, serverDelayMs } from "./policy.ts";
import { generateIdempotencyKey } from "../supabase/functions/_shared/idempotency/key.ts";
import { REPLAY_HEADER } from "../supabase/functions/_shared/idempotency/headers.ts";

/** How many attempts, how long, and how to pause between them. */
export interface RetryOptions {
  /** The key to send; give the same one to every call of one logical operation. Default: a new `idem_<uuid>`. */
  idempotencyKey?: string;
  /**
   * The most attempts, the first one included.
   * @default 5
   */
  maxAttempts?: number;
  /**
   * The longest the whole call may take, pauses included, in milliseconds; no attempt starts, and no pause
   * is taken, past it.
   * @default 60000
   */
  deadlineMs?: number;
  /**
   * The longest one attempt may take (until its body is read), in milliseconds; then it is aborted and
   * retried with the same key, since the server may or may not have run it.
   * @default 30000
   */
  attemptTimeoutMs?: number;
  /**
   * The cap of the first backoff pause, in milliseconds; each later cap doubles.
   * @default 250
   */
  baseDelayMs?: number;
  /**
   * The largest backoff cap, in milliseconds.
   * @default 10000
   */
  maxDelayMs?: number;
  /** Aborts the call: the attempt under way and any pause. */
  signal?: AbortSignal;
  /**
   * A uniform number in [0, 1) for the jitter; tests pass a fixed one.
   * @default Math.random
   */
  random?: () => number;
}

/** Why a call gave no data. */
export type IdempotentCallErrorKind =
  /** The server answered a status that is not retried, or the last attempt's retryable status. */
  | "http"
  /** The connection failed or was dropped before a full answer. */
  | "network"
  /** An attempt took longer than `attemptTimeoutMs`. */
  | "timeout"
  /** The caller's signal aborted the call. */
  | "aborted"
  /** `deadlineMs` was spent before an answer. */
  | "deadline";

/** The error of an idempotent call; `status` and `code` are the server's when it answered. */
export class IdempotentCallError extends Error {
  /** What went wrong. */
  readonly kind: IdempotentCallErrorKind;
  /** The HTTP status, or `null` when no answer arrived. */
  readonly status: number | null;
  /** The `error.code` of a JSON error body (e.g. `KEY_REUSED_WITH_DIFFERENT_REQUEST`), or `null`. */
  readonly code: string | null;
  /** The parsed error body, or `null`. */
  readonly body: unknown;

  /**
   * An error of `kind`, with the server's answer when there was one.
   *
   * @param kind What went wrong.
   * @param message A readable description.
   * @param details The status, code and body of the answer, and the cause.
   */
  constructor(
    kind: IdempotentCallErrorKind,
    message: string,
    details: { status?: number | null; code?: string | null; body?: unknown; cause?: unknown } = {},
  ) {
    super(message, { cause: details.cause });
    this.name = "IdempotentCallError";
    this.kind = kind;
    this.status = details.status ?? null;
    this.code = details.code ?? null;
    this.body = details.body ?? null;
  }
}

/** What an idempotent call returns: never throws for an HTTP or network failure. */
export interface IdempotentResult<T> {
  /** The parsed body of a 2xx or 3xx answer (JSON, else text), or `null`. */
  data: T | null;
  /** Why there is no data, or `null`. */
  error: IdempotentCallError | null;
  /** Whether the answer was a stored response (`X-Idempotency-Replay: true`). */
  replayed: boolean;
  /** How many attempts were sent. */
  attempts: number;
  /** The key every attempt carried. */
  key: string;
  /** The last HTTP status, or `null` when no attempt got an answer. */
  status: number | null;
}

/** One attempt's outcome, as the loop sees it. */
export type AttemptOutcome =
  | { kind: "answer"; status: number; headers: Headers; body: unknown }
  | { kind: "network"; error: unknown };

/** Sends one attempt with `key`, aborting on `signal`. */
export type SendAttempt = (key: string, signal: AbortSignal) => Promise<AttemptOutcome>;

/**
 * The retry loop shared by {@link idempotentFetch} and {@link invokeIdempotent}: sends with one key until a
 * final answer, the attempts or the deadline are spent, or the caller aborts.
 *
 * @param send Sends one attempt.
 * @param options Attempts, deadline, backoff, signal.
 * @returns The data or the error, whether it was a replay, and the attempts taken.
 * @throws {RangeError} when an option is out of range.
 * @example Retrying any transport
 * ```ts
 * const result = await callIdempotent(async (key, signal) => {
 *   const res = await fetch("https://example.test/fn", { method: "POST", headers: { "Idempotency-Key": key }, signal });
 *   return { kind: "answer", status: res.status, headers: res.headers, body: await res.text() };
 * });
 * ```
 */
export async function callIdempotent<T = unknown>(
  send: SendAttempt,
  options: RetryOptions = {},
): Promise<IdempotentResult<T>> {
  const settings = resolveRetryOptions(options);
  const key = options.idempotencyKey ?? generateIdempotencyKey();
  const deadline = Date.now() + settings.deadlineMs;
  let last = new IdempotentCallError("deadline", "the deadline passed before an attempt");
  let lastStatus: number | null = null;
  const failure = (error: IdempotentCallError, attempts: number): IdempotentResult<T> => ({
    data: null,
    error,
    replayed: false,
    attempts,
    key,
    status: lastStatus,
  });
  for (let attempt = 1; attempt <= settings.maxAttempts; attempt++) {
    if (options.signal?.aborted) return failure(aborted(options.signal), attempt - 1);
    const budget = deadline - Date.now();
    if (budget <= 0) return failure(deadlineError(last), attempt - 1);
    const timeout = Math.min(settings.attemptTimeoutMs, budget);
    const outcome = await attemptWithin(send, key, timeout, options.signal);
    if (outcome.kind === "aborted") return failure(aborted(options.signal), attempt);
    let serverDelay: number | null = null;
    if (outcome.kind === "answer") {
      lastStatus = outcome.status;
      if (outcome.status < 400) {
        const replayed = outcome.headers.get(REPLAY_HEADER) === "true";
        return { data: outcome.body as T, error: null, replayed, attempts: attempt, key, status: lastStatus };
      }
      const code = errorCode(outcome.body);
      last = new IdempotentCallError("http", `HTTP ${outcome.status}${code ? ` ${code}` : ""}`, {
        status: outcome.status,
        code,
        body: outcome.body,
      });
      if (!isRetryableStatus(outcome.status, code)) return failure(last, attempt);
      serverDelay = serverDelayMs(outcome.headers, Date.now());
    } else {
      last = outcome.kind === "timeout"
        ? new IdempotentCallError("timeout", `the attempt took over ${timeout} ms`)
        : new IdempotentCallError("network", `the request failed: ${describe(outcome.error)}`, {
          cause: outcome.error,
        });
    }
    if (attempt === settings.maxAttempts) break;
    const { baseDelayMs, maxDelayMs, random } = settings;
    const pause = nextDelayMs(attempt, serverDelay, baseDelayMs, maxDelayMs, random);
    // a pause that ends past the deadline cannot lead to an answer in time
    if (Date.now() + pause >= deadline) return failure(deadlineError(last), attempt);
    if (!(await sleep(pause, options.signal))) return failure(aborted(options.signal), attempt);
  }
  return failure(last, settings.maxAttempts);
}

type Settings = Required<Omit<RetryOptions, "idempotencyKey" | "signal">>;

function resolveRetryOptions(options: RetryOptions): Settings {
  const settings: Settings = {
    maxAttempts: options.maxAttempts ?? 5,
    deadlineMs: options.deadlineMs ?? 60_000,
    attemptTimeoutMs: options.attemptTimeoutMs ?? 30_000,
    baseDelayMs: options.baseDelayMs ?? 250,
    maxDelayMs: options.maxDelayMs ?? 10_000,
    random: options.random ?? Math.random,
  };
  for (const name of ["maxAttempts", "deadlineMs", "attemptTimeoutMs"] as const) {
    if (!(settings[name] >= 1)) throw new RangeError(`${name} must be at least 1, got ${settings[name]}`);
  }
  for (const name of ["baseDelayMs", "maxDelayMs"] as const) {
    if (!(settings[name] >= 0)) throw new RangeError(`${name} must be at least 0, got ${settings[name]}`);
  }
  return settings;
}

/** One attempt under its own timeout, tied to the caller's signal. */
async function attemptWithin(
  send: SendAttempt,
  key: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<AttemptOutcome | { kind: "timeout" } | { kind: "aborted" }> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new DOMException("attempt timeout", "TimeoutError"));
  }, timeoutMs);
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const outcome = await send(key, controller.signal);
    if (signal?.aborted) return { kind: "aborted" };
    if (outcome.kind === "network" && timedOut) return { kind: "timeout" };
    return outcome;
  } catch (error) {
    if (signal?.aborted) return { kind: "aborted" };
    if (timedOut) return { kind: "timeout" };
    return { kind: "network", error };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Waits `ms`; `false` when `signal` aborted first. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function aborted(signal: AbortSignal | undefined): IdempotentCallError {
  return new IdempotentCallError("aborted", "the call was aborted", { cause: signal?.reason });
}

function deadlineError(last: IdempotentCallError): IdempotentCallError {
  return new IdempotentCallError("deadline", `the deadline passed; last failure: ${last.message}`, {
    status: last.status,
    code: last.code,
    body: last.body,
    cause: last,
  });
}

/** `error.code` of the toolkit's JSON error shape, or `null`. */
function errorCode(body: unknown): string | null {
  if (typeof body !== "object" || body === null) return null;
  const error = (body as { error?: unknown }).error;
  if (typeof error !== "object" || error === null) return null;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : null;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Reads a body as JSON when it says so, else as text; `null` when empty. */
export async function readBody(response: Response): Promise<unknown> {
  const text = await response.text();
  if (text === "") return null;
  const type = response.headers.get("content-type") ?? "";
  if (/^application\/([\w.+-]*\+)?json/i.test(type)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** A request body that can be sent again unchanged on every attempt. */
export type ResendableBody =
  | string
  | ArrayBuffer
  | Uint8Array<ArrayBuffer>
  | Blob
  | URLSearchParams
  | FormData;

/** {@link idempotentFetch}'s request: `fetch`'s init with a body that can be re-sent, plus retry options. */
export interface IdempotentFetchInit extends RetryOptions {
  /**
   * The HTTP method.
   * @default "POST"
   */
  method?: string;
  /** Request headers; `Idempotency-Key` is added. */
  headers?: HeadersInit;
  /** A body that can be sent again (not a stream): an object is sent as JSON. */
  body?: ResendableBody | Record<string, unknown> | unknown[];
  /**
   * The `fetch` to use (a test proxy, a polyfill, an instrumented one).
   * @default globalThis.fetch
   */
  fetch?: typeof fetch;
}

/**
 * `fetch` with an idempotency key and safe retries. The key is sent as `Idempotency-Key` on every attempt;
 * the result never throws for HTTP or network failures (see {@link IdempotentResult}).
 *
 * @param url The function's URL, e.g. `https://<ref>.supabase.co/functions/v1/process-document`.
 * @param init Method, headers, body, and {@link RetryOptions}.
 * @returns The data or the error, whether it was a replay, the attempts and the key.
 * @throws {RangeError} when a retry option is out of range.
 * @example Creating a document once
 * ```ts
 * const { data, error, replayed, attempts } = await idempotentFetch(`${functionsUrl}/process-document`, {
 *   headers: { Authorization: `Bearer ${accessToken}` },
 *   body: { title: "Q3 report", content: "..." },
 * });
 * ```
 */
export function idempotentFetch<T = unknown>(
  url: string | URL,
  init: IdempotentFetchInit = {},
): Promise<IdempotentResult<T>> {
  const fetchFn = init.fetch ?? globalThis.fetch;
  const { body, contentType } = encodeBody(init.body);
  return callIdempotent<T>(async (key, signal) => {
    const headers = new Headers(init.headers);
    if (contentType !== null && !headers.has("content-type")) headers.set("content-type", contentType);
    headers.set("idempotency-key", key);
    let response: Response;
    try {
      response = await fetchFn(url, { method: init.method ?? "POST", headers, body, signal });
    } catch (error) {
      return { kind: "network", error };
    }
    // a body cut off mid-way is a lost answer like a dropped connection: retried by the loop
    return {
      kind: "answer",
      status: response.status,
      headers: response.headers,
      body: await readBody(response),
    };
  }, init);
}

function encodeBody(
  body: IdempotentFetchInit["body"],
): { body: BodyInit | null; contentType: string | null } {
  if (body === undefined || body === null) return { body: null, contentType: null };
  if (
    typeof body === "string" || body instanceof ArrayBuffer || body instanceof Uint8Array ||
    body instanceof Blob || body instanceof URLSearchParams || body instanceof FormData
  ) {
    return { body: body as BodyInit, contentType: null };
  }
  return { body: JSON.stringify(body), contentType: "application/json" };
}

/** The methods `functions.invoke` sends. */
export type InvokeMethod = "POST" | "GET" | "PUT" | "PATCH" | "DELETE";

/** The bodies `functions.invoke` encodes: an object or array as JSON, the rest as they are. */
export type InvokeBody = string | Blob | ArrayBuffer | FormData | Record<string, unknown> | unknown[];

/**
 * The part of a supabase-js client that {@link invokeIdempotent} uses: `functions.invoke` as in
 * `@supabase/supabase-js` 2.x, where an HTTP error comes back as `error.context` (the Response) and a network
 * failure as a `FunctionsFetchError`.
 */
export interface FunctionsInvoker {
  /** The supabase-js functions client. */
  functions: {
    /** `supabase.functions.invoke`. */
    invoke(
      name: string,
      options: {
        headers?: Record<string, string>;
        body?: InvokeBody;
        method?: InvokeMethod;
        signal?: AbortSignal;
      },
    ): Promise<{ data: unknown; error: unknown; response?: Response }>;
  };
}

/** {@link invokeIdempotent}'s options: `functions.invoke`'s, plus {@link RetryOptions}. */
export interface InvokeIdempotentOptions extends RetryOptions {
  /** Sent as the body, encoded by supabase-js (an object as JSON); not a stream, which could not be re-sent. */
  body?: InvokeBody;
  /** Extra headers; `Idempotency-Key` is added. */
  headers?: Record<string, string>;
  /**
   * The HTTP method.
   * @default "POST"
   */
  method?: InvokeMethod;
}

/**
 * `supabase.functions.invoke` with an idempotency key and safe retries.
 *
 * @param client A supabase-js client (or anything with its `functions.invoke`).
 * @param name The function's name.
 * @param options Body, headers, method, and {@link RetryOptions}.
 * @returns The data or the error, whether it was a replay, the attempts and the key.
 * @throws {RangeError} when a retry option is out of range.
 * @example With supabase-js
 * ```ts
 * const supabase = createClient(SUPABASE_URL, SUPABASE_ANON_KEY);
 * const key = generateIdempotencyKey(); // once per operation: keep it if the app may retry later
 * const { data, error, replayed } = await invokeIdempotent(supabase, "process-document", {
 *   body: { title: "Q3 report", content: "..." },
 *   idempotencyKey: key,
 * });
 * ```
 */
export function invokeIdempotent<T = unknown>(
  client: FunctionsInvoker,
  name: string,
  options: InvokeIdempotentOptions = {},
): Promise<IdempotentResult<T>> {
  return callIdempotent<T>(async (key, signal) => {
    const { data, error, response } = await client.functions.invoke(name, {
      ...(options.body === undefined ? {} : { body: options.body }),
      headers: { ...options.headers, "Idempotency-Key": key },
      method: options.method ?? "POST",
      signal,
    });
    if (error === null || error === undefined) {
      return {
        kind: "answer",
        status: response?.status ?? 200,
        headers: response?.headers ?? new Headers(),
        body: data,
      };
    }
    const context = (error as { context?: unknown }).context;
    if (context instanceof Response) {
      return {
        kind: "answer",
        status: context.status,
        headers: context.headers,
        body: await readBody(context),
      };
    }
    // FunctionsFetchError: the request never got an answer
    return { kind: "network", error };
  }, options);
}
