/**
 * `withIdempotency`: wraps an Edge Function handler so that a request with an idempotency key runs once,
 * and every retry of it gets the first response back.
 */

import { type Caller, callerFromUserId, createJwtCallerResolver } from "./auth.ts";
import { buildResponse, fromStoredResponse, toStoredResponse } from "./_codec.ts";
import { isStoreOutage } from "./_outage.ts";
import { errorResponse, IdempotencyError } from "./errors.ts";
import { requestFingerprint } from "./fingerprint.ts";
import { HandlerTiming } from "./_handler_timing.ts";
import { corsHeaders, REPLAY_HEADER, RETRY_AFTER_MS_HEADER, withCorsHeaders } from "./headers.ts";
import { getIdempotencyKey } from "./key.ts";
import { keylessBaseKey, KeylessPairStore } from "./keyless.ts";
import { createMetrics, type IdempotencyMetrics, type MetricsRecorder } from "./metrics.ts";
import { metricsRecorderFromEnv } from "./metrics_postgres.ts";
import { inRollout, rolloutSetting } from "./rollout.ts";
import {
  defaultStore,
  type IdempotencyOptions,
  type ResolvedIdempotencyOptions,
  resolveOptions,
} from "./options.ts";
import type { BeginInput, BeginResult, IdempotencyStore, Lease, StoredResponse } from "./store.ts";

/**
 * An Edge Function handler, as `Deno.serve` calls it.
 *
 * @example A handler to wrap
 * ```ts
 * import type { Handler } from "./middleware.ts";
 *
 * const handler: Handler = async (req) => Response.json({ received: (await req.json()).amount }, { status: 201 });
 * console.assert(typeof handler === "function");
 * ```
 */
export type Handler = (req: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;

/** Plain counters of what the wrapper did since it was created (defined with the metrics hook). */
export type { IdempotencyMetrics } from "./metrics.ts";

/**
 * The wrapped handler, with its live {@link IdempotencyMetrics}.
 *
 * @example Serve the wrapped handler
 * ```ts
 * import { type IdempotentHandler, withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const fetch: IdempotentHandler = withIdempotency(() => new Response("ok"), { functionName: "f", store: new MemoryStore() });
 * const entry = { fetch } satisfies Deno.ServeDefaultExport; // `export default entry;` in index.ts
 * console.assert(typeof entry.fetch === "function");
 * ```
 */
export type IdempotentHandler = ((req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>) & {
  readonly metrics: Readonly<IdempotencyMetrics>;
};

/** Everything one wrapper needs per request. */
interface Context {
  readonly handler: Handler;
  readonly options: ResolvedIdempotencyOptions;
  readonly metrics: IdempotencyMetrics;
  readonly getCaller: (req: Request) => Promise<Caller>;
  readonly store: () => IdempotencyStore;
  /** Recent handler durations and the runs under way here: the 409's hint, and the waiters' wake-up. */
  readonly timing: HandlerTiming;
  /** Where counts and latencies also go (see metrics.ts). */
  readonly recorder: MetricsRecorder | undefined;
}

/** The request as read once at claim time: its bytes are what every later step sees. */
interface ReadRequest {
  readonly req: Request;
  readonly body: Uint8Array;
  readonly info: Deno.ServeHandlerInfo | undefined;
}

/** What the handler answered, body already read. */
interface HandlerOutcome {
  status: number;
  headers: Headers;
  body: Uint8Array;
  /** Set when the handler threw (the outcome is then a 500 `INTERNAL_ERROR`). */
  error?: unknown;
}

/** Whether this request's lease was found taken over (counted once per request). */
interface LeaseState {
  lost: boolean;
}

type Claim = BeginResult | { outcome: "store_error" };

/** 4xx statuses that say "try again", so they are never stored even with `storeClientErrors`. */
const TRANSIENT_CLIENT_ERRORS = new Set([408, 409, 425, 429]);
/** `Retry-After` of a 503 `STORE_UNAVAILABLE`, in seconds. */
const STORE_RETRY_AFTER_SECONDS = 1;
/** The shortest and the longest pause between polls of a `"wait"` duplicate whose first runs elsewhere, in ms. */
const FIRST_POLL_MS = 5;
const MAX_POLL_MS = 1000;

/**
 * Wraps `handler`: a request with an `Idempotency-Key` (or `X-Idempotency-Key`) runs once per user and
 * key; retries get the stored response with `X-Idempotency-Replay: true`. Calls without a key run as before.
 *
 * @param handler The function's handler; it runs at most once per user and key.
 * @param options `functionName` and any option to change (see `IdempotencyOptions`).
 * @returns The wrapped handler, with live `metrics`.
 * @throws {TypeError | RangeError} at wrap time when `options` are invalid.
 * @example A function that charges once
 * ```ts
 * import { withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * let charges = 0;
 * const fetch = withIdempotency(() => Response.json({ charge: ++charges }, { status: 201 }), {
 *   functionName: "charge",
 *   store: new MemoryStore(), // the default is the Postgres store on SUPABASE_DB_URL
 *   anonymous: "shared",
 * });
 * const send = () => fetch(new Request("http://localhost/charge", { method: "POST", headers: { "Idempotency-Key": "order-42" } }));
 * await (await send()).text();
 * const retry = await send();
 * console.assert(retry.headers.get("x-idempotency-replay") === "true" && charges === 1);
 * await retry.text();
 * ```
 */
export function withIdempotency(handler: Handler, options: IdempotencyOptions): IdempotentHandler {
  const resolved = resolveOptions(options);
  const recorder = resolved.metrics ?? metricsRecorderFromEnv();
  const ctx: Context = {
    handler,
    options: resolved,
    metrics: createMetrics(resolved.functionName, recorder),
    recorder,
    getCaller: resolved.getUserId
      ? callerFromUserId(resolved.getUserId)
      : createJwtCallerResolver(resolved.jwtSecret === undefined ? {} : { jwtSecret: resolved.jwtSecret }),
    store: () => resolved.store ?? defaultStore(),
    timing: new HandlerTiming(),
  };
  const wrapped = (req: Request, info?: Deno.ServeHandlerInfo) => serve(ctx, req, info);
  return Object.defineProperty(wrapped, "metrics", {
    value: ctx.metrics,
    enumerable: true,
  }) as IdempotentHandler;
}

/** CORS around everything: preflights never reach the handler. */
async function serve(ctx: Context, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
  if (ctx.options.cors && req.method === "OPTIONS") {
    return new Response(null, { status: 204, headers: corsHeaders });
  }
  const response = await answer(ctx, req, info);
  return ctx.options.cors ? withCorsHeaders(response) : response;
}

/** Every failure becomes the JSON error shape; unexpected ones are logged and hidden behind a 500. */
async function answer(ctx: Context, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
  try {
    return await route(ctx, req, info);
  } catch (error) {
    if (error instanceof IdempotencyError) return errorResponse(error);
    log(ctx, "error", "the request failed", error);
    return errorResponse(internalError());
  }
}

async function route(ctx: Context, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
  const rollout = rolloutSetting(ctx.options.functionName, {
    enabled: ctx.options.enabled,
    percent: ctx.options.rolloutPercent,
  });
  if (!rollout.enabled) return await bypass(ctx, req, info);
  const key = getIdempotencyKey(req);
  if (key === null) {
    if (ctx.options.required) {
      throw new IdempotencyError("KEY_REQUIRED", "This function needs an Idempotency-Key");
    }
    if (!ctx.options.keyless) return await ctx.handler(req, info);
    return await routeKeyless(ctx, req, info, rollout.percent);
  }
  if (!inRollout(ctx.options.functionName, key, rollout.percent)) return await bypass(ctx, req, info);
  const caller = await ctx.getCaller(req);
  if (caller.kind === "anonymous" && ctx.options.anonymous === "bypass") return await ctx.handler(req, info);
  if (caller.kind === "anonymous" && ctx.options.anonymous === "reject") {
    throw new IdempotencyError("AUTH_REQUIRED", "An idempotency key needs a signed-in user");
  }
  const read: ReadRequest = { req, body: new Uint8Array(await req.arrayBuffer()), info };
  const claim = await claimKey(ctx, beginInput(ctx, read, key, caller));
  return await settleClaim(ctx, claim, read);
}

/** The rollout switch sent this request past idempotency: it runs as if unwrapped, and is counted. */
function bypass(ctx: Context, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
  ctx.metrics.bypassed++;
  return Promise.resolve(ctx.handler(req, info));
}

/**
 * A call without a key, with `keyless` on: claimed under a key derived from caller, function and request
 * (see keyless.ts) on the pair of time buckets. Anonymous callers run unprotected: merging them could serve
 * one stranger's response to another.
 */
async function routeKeyless(
  ctx: Context,
  req: Request,
  info: Deno.ServeHandlerInfo | undefined,
  percent: number,
): Promise<Response> {
  const caller = await ctx.getCaller(req);
  if (caller.kind === "anonymous") return await ctx.handler(req, info);
  const body = new Uint8Array(await req.arrayBuffer());
  const read: ReadRequest = { req, body, info };
  const input = beginInput(ctx, read, "", caller);
  const key = keylessBaseKey({
    callerKind: caller.kind,
    userId: input.userId,
    functionName: input.functionName,
    fingerprint: input.fingerprint,
  });
  if (!inRollout(ctx.options.functionName, key, percent)) return await bypass(ctx, freshRequest(read), info);
  const pairs = new KeylessPairStore(ctx.store(), { windowMs: ctx.options.keylessWindowMs });
  // a keyless claim is only needed for twice the window; the stores' TTL is whole seconds
  const ttlSeconds = Math.max(1, Math.ceil((2 * ctx.options.keylessWindowMs) / 1000));
  const keylessCtx: Context = { ...ctx, store: () => pairs };
  const claim = await claimKey(keylessCtx, { ...input, key, ttlSeconds });
  return await settleClaim(keylessCtx, claim, read);
}

/** Path and query: `/charge?amount=1` and `/charge?amount=2` are different requests. */
function pathWithQuery(url: string): string {
  const { pathname, search } = new URL(url);
  return pathname + search;
}

function beginInput(ctx: Context, read: ReadRequest, key: string, caller: Caller): BeginInput {
  const userId = caller.kind === "user" ? caller.userId : null;
  const fingerprint = requestFingerprint({
    method: read.req.method,
    path: pathWithQuery(read.req.url),
    body: read.body,
    contentType: read.req.headers.get("content-type"),
    caller: caller.kind,
  });
  const { functionName, ttlSeconds, lockTimeoutSeconds } = ctx.options;
  return { key, userId, functionName, fingerprint, ttlSeconds, lockTimeoutSeconds };
}

/** `begin`, then (in `"wait"` mode) polls while another request holds the key. */
async function claimKey(ctx: Context, input: BeginInput): Promise<Claim> {
  try {
    const claimStart = performance.now();
    const result = await ctx.store().begin(input);
    ctx.recorder?.observe(ctx.options.functionName, "claim", (performance.now() - claimStart) / 1000);
    if (result.outcome !== "in_progress") return result;
    ctx.metrics.inFlight++;
    return ctx.options.onInFlight === "wait" ? await waitForFirst(ctx, input, result) : result;
  } catch (error) {
    // Only an outage is 503 (or fail-open); a deleted user or a constraint error is answered as what it is.
    if (error instanceof IdempotencyError) throw error;
    storeFailed(ctx, "begin", error);
    if (!isStoreOutage(error)) throw error;
    return { outcome: "store_error" };
  }
}

/**
 * Asks `begin` again until the key is no longer in progress or `waitTimeoutMs` is spent: when the first
 * runs in this isolate, once, the moment it finishes; else after pauses of a quarter of the time waited so
 * far (so the answer comes at most about a quarter late), from 5 ms, under a quarter of the expected run
 * time and 1 s.
 */
async function waitForFirst(ctx: Context, input: BeginInput, first: BeginResult): Promise<BeginResult> {
  const start = Date.now();
  const deadline = start + ctx.options.waitTimeoutMs;
  let result = first;
  while (result.outcome === "in_progress") {
    const now = Date.now();
    if (now >= deadline) break;
    const local = ctx.timing.settled(result.recordId);
    const cap = Math.min(MAX_POLL_MS, ctx.timing.expectedMs(deadline - now) / 4);
    const pause = Math.max(FIRST_POLL_MS, Math.min((now - start) / 4, cap));
    await sleep(Math.min(local ? Infinity : pause, deadline - now), local);
    result = await ctx.store().begin(input);
  }
  return result;
}

/** Waits `ms`, or less when `wake` settles first. */
function sleep(ms: number, wake?: Promise<void>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race(wake ? [elapsed, wake] : [elapsed]).finally(() => clearTimeout(timer));
}

async function settleClaim(ctx: Context, claim: Claim, read: ReadRequest): Promise<Response> {
  switch (claim.outcome) {
    case "started":
      return await runClaimed(ctx, { recordId: claim.recordId, leaseToken: claim.leaseToken }, read);
    case "replay":
      ctx.metrics.replayed++;
      return await replayResponse(claim.response);
    case "in_progress":
      return inProgress(ctx, claim.retryAfterSeconds);
    case "mismatch":
      ctx.metrics.mismatched++;
      throw new IdempotencyError(
        "KEY_REUSED_WITH_DIFFERENT_REQUEST",
        "This idempotency key was already used with a different request (method, path or body)",
      );
    case "store_error":
      return await storeUnavailable(ctx, read);
  }
}

/**
 * 409 `REQUEST_IN_PROGRESS`, asking the client back near the first's expected finish (never past its
 * lease): `Retry-After` in whole seconds, and the milliseconds in `X-Idempotency-Retry-After-Ms`.
 */
function inProgress(ctx: Context, leaseSeconds: number): Response {
  const hintMs = ctx.timing.expectedMs(leaseSeconds * 1000);
  const error = new IdempotencyError(
    "REQUEST_IN_PROGRESS",
    "A request with this idempotency key is still running",
    {
      retryAfterSeconds: Math.max(1, Math.ceil(hintMs / 1000)),
    },
  );
  return errorResponse(error, { [RETRY_AFTER_MS_HEADER]: String(hintMs) });
}

/** Fail-open runs the handler unprotected; fail-closed answers 503 and runs nothing. */
async function storeUnavailable(ctx: Context, read: ReadRequest): Promise<Response> {
  if (ctx.options.onStoreError === "fail-closed") {
    throw new IdempotencyError("STORE_UNAVAILABLE", "The idempotency store is unavailable; retry later", {
      retryAfterSeconds: STORE_RETRY_AFTER_SECONDS,
    });
  }
  ctx.metrics.failOpen++;
  return await ctx.handler(freshRequest(read), read.info);
}

/** Runs the handler under `lease`, stores or releases the outcome, and answers it to this client. */
async function runClaimed(ctx: Context, lease: Lease, read: ReadRequest): Promise<Response> {
  ctx.metrics.started++;
  const state: LeaseState = { lost: false };
  const renewal = startRenewal(ctx, lease, state);
  const finished = ctx.timing.start(lease.recordId);
  let outcome: HandlerOutcome;
  try {
    outcome = await runHandler(ctx, read);
  } finally {
    await renewal.stop();
  }
  await finish(ctx, lease, outcome, state); // never throws: store failures are logged and counted
  finished();
  const headers = new Headers(outcome.headers);
  headers.delete("content-length");
  headers.set(REPLAY_HEADER, "false");
  return buildResponse(outcome.status, headers, outcome.body);
}

/** The handler's answer with its body read; a throw becomes a 500 `INTERNAL_ERROR`. */
async function runHandler(ctx: Context, read: ReadRequest): Promise<HandlerOutcome> {
  const handlerStart = performance.now();
  try {
    const response = await ctx.handler(freshRequest(read), read.info);
    const body = new Uint8Array(await response.arrayBuffer());
    ctx.recorder?.observe(ctx.options.functionName, "handler", (performance.now() - handlerStart) / 1000);
    return { status: response.status, headers: new Headers(response.headers), body };
  } catch (error) {
    log(ctx, "error", "the handler threw; the key is released for a retry", error);
    const response = errorResponse(internalError());
    return {
      status: 500,
      headers: response.headers,
      body: new Uint8Array(await response.arrayBuffer()),
      error,
    };
  }
}

/**
 * A new Request with the bytes read at claim time: the handler may consume or change it without touching
 * the key, fingerprint or lease this request completes. The client's abort signal is left behind on
 * purpose: claimed work runs to the end and is stored even if the client hangs up, so its retry replays.
 */
function freshRequest(read: ReadRequest): Request {
  const { req, body } = read;
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  return new Request(req.url, {
    method: req.method,
    headers: req.headers,
    body: hasBody ? body.slice() : null,
    redirect: req.redirect,
  });
}

/** Stores a final outcome, or releases the key so a retry runs again. */
async function finish(ctx: Context, lease: Lease, outcome: HandlerOutcome, state: LeaseState): Promise<void> {
  const storable = isStorable(outcome.status, ctx.options);
  try {
    const owned = storable
      ? await ctx.store().complete(lease, await toStoredResponse(outcome, ctx.options))
      : await release(ctx, lease, outcome);
    if (!owned) leaseLost(ctx, state, storable ? "complete" : "fail");
  } catch (error) {
    storeFailed(ctx, storable ? "complete" : "fail", error);
  }
}

function release(ctx: Context, lease: Lease, outcome: HandlerOutcome): Promise<boolean> {
  ctx.metrics.failed++;
  const message = outcome.error === undefined ? `HTTP ${outcome.status}` : errorMessage(outcome.error);
  return ctx.store().fail(lease, { message, status: outcome.status });
}

/**
 * Final outcomes are stored: 2xx, and 3xx (a redirect after a POST reports work that was done, so running
 * it again would duplicate it); 4xx only with `storeClientErrors`, never the transient ones; 5xx never.
 */
function isStorable(status: number, options: ResolvedIdempotencyOptions): boolean {
  if (status < 400) return true;
  return status < 500 && options.storeClientErrors && !TRANSIENT_CLIENT_ERRORS.has(status);
}

/** Renews `lease` every `lockTimeoutSeconds / 2` until stopped; `stop` waits for a renewal under way. */
function startRenewal(ctx: Context, lease: Lease, state: LeaseState): { stop(): Promise<void> } {
  if (!ctx.options.renewLease) return { stop: () => Promise.resolve() };
  let pending = Promise.resolve();
  const timer = setInterval(() => {
    pending = pending.then(() => renewOnce(ctx, lease, state));
  }, ctx.options.lockTimeoutSeconds * 500);
  return {
    stop: () => {
      clearInterval(timer);
      return pending;
    },
  };
}

async function renewOnce(ctx: Context, lease: Lease, state: LeaseState): Promise<void> {
  if (state.lost) return;
  try {
    if (!(await ctx.store().extendLease(lease, ctx.options.lockTimeoutSeconds))) {
      leaseLost(ctx, state, "extendLease");
    }
  } catch (error) {
    storeFailed(ctx, "extendLease", error);
  }
}

async function replayResponse(stored: StoredResponse): Promise<Response> {
  const response = await fromStoredResponse(stored);
  response.headers.set(REPLAY_HEADER, "true");
  return response;
}

function leaseLost(ctx: Context, state: LeaseState, during: string): void {
  if (state.lost) return;
  state.lost = true;
  ctx.metrics.leaseLost++;
  log(ctx, "warn", `lease lost at ${during}: another request took the key over; this result is not stored`);
}

function storeFailed(ctx: Context, method: string, error: unknown): void {
  ctx.metrics.storeErrors++;
  const policy = method === "begin" ? ` (${ctx.options.onStoreError})` : "";
  log(ctx, "error", `store ${method} failed${policy}`, error);
}

function log(ctx: Context, level: "error" | "warn", message: string, error?: unknown): void {
  const line = `[idempotency] ${ctx.options.functionName}: ${message}`;
  if (error === undefined) ctx.options.logger[level](line);
  else ctx.options.logger[level](line, error);
}

function internalError(): IdempotencyError {
  return new IdempotencyError("INTERNAL_ERROR", "The function failed; retry with the same idempotency key");
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
