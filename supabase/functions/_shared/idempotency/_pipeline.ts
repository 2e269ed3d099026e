/**
 * The request pipeline both wrappers share: CORS, the key (or a keyless one), the rollout switch, the caller
 * and its rules, the fingerprint, the claim (with `onInFlight: "wait"` and the 409 hint from recent handler
 * durations), the store-error policy, metrics and the error shape. What differs between `withIdempotency`
 * and `withIdempotentTransaction` is only how the work runs and completes once claimed: a {@link RunMode}.
 */

import type { Caller } from "./auth.ts";
import { buildResponse, fromStoredResponse } from "./_codec.ts";
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
import type { ResolvedIdempotencyOptions } from "./options.ts";
import type { BeginInput, BeginResult, IdempotencyStore, Lease } from "./store.ts";

/** The request as read once at claim time: its bytes are what every later step sees. */
export interface ReadRequest {
  readonly req: Request;
  readonly body: Uint8Array;
  readonly info: Deno.ServeHandlerInfo | undefined;
  readonly caller: Caller;
}

/** What the handler answered, body already read. */
export interface HandlerOutcome {
  status: number;
  headers: Headers;
  body: Uint8Array;
  /** Set when the handler threw (the outcome is then a 500 `INTERNAL_ERROR`). */
  error?: unknown;
}

/** Whether this request's lease was found taken over (counted once per request). */
export interface LeaseState {
  lost: boolean;
}

/** A claim the store granted, with what the mode needs to run it. */
export interface ClaimedRun {
  readonly lease: Lease;
  readonly attempt: number;
  readonly read: ReadRequest;
  readonly input: BeginInput;
}

/** What a claim gave: the store's answer, or an outage to apply `onStoreError` to. */
export type Claim = BeginResult | { outcome: "store_error" };

/** The back half of a wrapper: how the work runs, is stored and answered. */
export interface RunMode {
  /** The store keys are claimed on (and released, renewed, polled by `"wait"` duplicates). */
  readonly store: () => IdempotencyStore;
  /**
   * Runs the work without idempotency: no key, a rollout or anonymous bypass, or fail-open.
   * `caller` is given when already resolved.
   */
  unprotected(
    ctx: Pipeline,
    req: Request,
    info: Deno.ServeHandlerInfo | undefined,
    caller?: Caller,
  ): Promise<Response>;
  /** Runs the work under a claim `store()` granted, stores or releases its outcome, and answers it. */
  runClaimed(ctx: Pipeline, run: ClaimedRun): Promise<Response>;
  /**
   * Claims and runs in one go (the claim inside the work's transaction); the pipeline then claims nothing
   * itself. Returns the answer of a run, or a claim that did not start, to be answered as any other. Throws
   * only for a failure of the claim (classified as a store error).
   */
  claimAndRun?(ctx: Pipeline, input: BeginInput, read: ReadRequest): Promise<Claim | Response>;
}

/** Everything one wrapper needs per request. */
export interface Pipeline {
  readonly mode: RunMode;
  readonly options: ResolvedIdempotencyOptions;
  readonly metrics: IdempotencyMetrics;
  readonly getCaller: (req: Request) => Promise<Caller>;
  /** The claim store (a keyless request's is the pair store over the mode's). */
  readonly store: () => IdempotencyStore;
  /** Recent handler durations and the runs under way here: the 409's hint, and the waiters' wake-up. */
  readonly timing: HandlerTiming;
  /** Where counts and latencies also go (see metrics.ts). */
  readonly recorder: MetricsRecorder | undefined;
}

/** The wrapped handler, with its live counters. */
export type PipelineHandler = ((req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>) & {
  readonly metrics: Readonly<IdempotencyMetrics>;
};

/** 4xx statuses that say "try again", so they are never stored even with `storeClientErrors`. */
const TRANSIENT_CLIENT_ERRORS = new Set([408, 409, 425, 429]);
/** `Retry-After` of a 503 `STORE_UNAVAILABLE`, in seconds. */
const STORE_RETRY_AFTER_SECONDS = 1;
/** The shortest and the longest pause between polls of a `"wait"` duplicate whose first runs elsewhere, in ms. */
const FIRST_POLL_MS = 5;
const MAX_POLL_MS = 1000;

/**
 * The wrapped handler of `mode` under `options` (already resolved and checked).
 *
 * @param mode How the work runs once claimed.
 * @param options The wrapper's options.
 * @param getCaller The caller resolver (from `getUserId` or the JWT).
 * @returns The handler, with live `metrics`.
 */
export function createPipeline(
  mode: RunMode,
  options: ResolvedIdempotencyOptions,
  getCaller: (req: Request) => Promise<Caller>,
): PipelineHandler {
  const recorder = options.metrics ?? metricsRecorderFromEnv();
  const ctx: Pipeline = {
    mode,
    options,
    metrics: createMetrics(options.functionName, recorder),
    recorder,
    getCaller,
    store: mode.store,
    timing: new HandlerTiming(),
  };
  const wrapped = (req: Request, info?: Deno.ServeHandlerInfo) => serve(ctx, req, info);
  return Object.defineProperty(wrapped, "metrics", {
    value: ctx.metrics,
    enumerable: true,
  }) as PipelineHandler;
}

/** CORS around everything: preflights never reach the handler. */
async function serve(ctx: Pipeline, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
  if (ctx.options.cors && req.method === "OPTIONS") {
    return new Response(null, { status: 204, headers: corsHeaders });
  }
  const response = await answer(ctx, req, info);
  return ctx.options.cors ? addCorsHeaders(response) : response;
}

const CORS_ENTRIES = Object.entries(corsHeaders);

/**
 * The CORS headers `response` lacks, added in place: a copy (`withCorsHeaders`) rebuilds the headers and
 * turns a body of bytes into a stream, which Deno.serve then sends as one. Only a response whose headers
 * are immutable (a `fetch` answer passed through) is copied.
 */
function addCorsHeaders(response: Response): Response {
  try {
    for (const [name, value] of CORS_ENTRIES) {
      if (!response.headers.has(name)) response.headers.set(name, value);
    }
    return response;
  } catch {
    return withCorsHeaders(response);
  }
}

/** Every failure becomes the JSON error shape; unexpected ones are logged and hidden behind a 500. */
async function answer(ctx: Pipeline, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
  try {
    return await route(ctx, req, info);
  } catch (error) {
    if (error instanceof IdempotencyError) return errorResponse(error);
    log(ctx, "error", "the request failed", error);
    return errorResponse(internalError());
  }
}

async function route(ctx: Pipeline, req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
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
    if (!ctx.options.keyless) return await ctx.mode.unprotected(ctx, req, info);
    return await routeKeyless(ctx, req, info, rollout.percent);
  }
  if (!inRollout(ctx.options.functionName, key, rollout.percent)) return await bypass(ctx, req, info);
  const caller = await ctx.getCaller(req);
  if (caller.kind === "anonymous" && ctx.options.anonymous === "bypass") {
    return await ctx.mode.unprotected(ctx, req, info, caller);
  }
  if (caller.kind === "anonymous" && ctx.options.anonymous === "reject") {
    throw new IdempotencyError("AUTH_REQUIRED", "An idempotency key needs a signed-in user");
  }
  const read: ReadRequest = { req, body: new Uint8Array(await req.arrayBuffer()), info, caller };
  const input = beginInput(ctx, read, key);
  return await settleClaim(ctx, await claimKey(ctx, input, read), read, input);
}

/** The rollout switch sent this request past idempotency: it runs as if unwrapped, and is counted. */
function bypass(
  ctx: Pipeline,
  req: Request,
  info: Deno.ServeHandlerInfo | undefined,
  caller?: Caller,
): Promise<Response> {
  ctx.metrics.bypassed++;
  return ctx.mode.unprotected(ctx, req, info, caller);
}

/**
 * A call without a key, with `keyless` on: claimed under a key derived from caller, function and request
 * (see keyless.ts) on the pair of time buckets. Anonymous callers run unprotected: merging them could serve
 * one stranger's response to another.
 */
async function routeKeyless(
  ctx: Pipeline,
  req: Request,
  info: Deno.ServeHandlerInfo | undefined,
  percent: number,
): Promise<Response> {
  const caller = await ctx.getCaller(req);
  if (caller.kind === "anonymous") return await ctx.mode.unprotected(ctx, req, info, caller);
  const read: ReadRequest = { req, body: new Uint8Array(await req.arrayBuffer()), info, caller };
  const input = beginInput(ctx, read, "");
  const key = keylessBaseKey({
    callerKind: caller.kind,
    userId: input.userId,
    functionName: input.functionName,
    fingerprint: input.fingerprint,
  });
  if (!inRollout(ctx.options.functionName, key, percent)) {
    return await bypass(ctx, freshRequest(read), info, caller);
  }
  const pairs = new KeylessPairStore(ctx.store(), { windowMs: ctx.options.keylessWindowMs });
  // a keyless claim is only needed for twice the window; the stores' TTL is whole seconds
  const ttlSeconds = Math.max(1, Math.ceil((2 * ctx.options.keylessWindowMs) / 1000));
  const keylessCtx: Pipeline = { ...ctx, store: () => pairs };
  const keyless = { ...input, key, ttlSeconds };
  return await settleClaim(keylessCtx, await claimKey(keylessCtx, keyless, read), read, keyless);
}

/** Path and query: `/charge?amount=1` and `/charge?amount=2` are different requests. */
function pathWithQuery(url: string): string {
  const { pathname, search } = new URL(url);
  return pathname + search;
}

function beginInput(ctx: Pipeline, read: ReadRequest, key: string): BeginInput {
  const { caller } = read;
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

/**
 * `begin` (or the mode's own claim-and-run), then, in `"wait"` mode, polls while another request holds the
 * key. Only an outage becomes `store_error` (503 or fail-open); a deleted user or a constraint error is
 * answered as what it is.
 */
async function claimKey(ctx: Pipeline, input: BeginInput, read: ReadRequest): Promise<Claim | Response> {
  try {
    const claimStart = performance.now();
    const result = ctx.mode.claimAndRun
      ? await ctx.mode.claimAndRun(ctx, input, read)
      : await ctx.store().begin(input);
    if (!ctx.mode.claimAndRun) {
      ctx.recorder?.observe(ctx.options.functionName, "claim", (performance.now() - claimStart) / 1000);
    }
    if (result instanceof Response || result.outcome !== "in_progress") return result;
    ctx.metrics.inFlight++;
    // a claim inside the transaction already waited on the first run's row
    return ctx.options.onInFlight === "wait" && !ctx.mode.claimAndRun
      ? await waitForFirst(ctx, input, result)
      : result;
  } catch (error) {
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
async function waitForFirst(ctx: Pipeline, input: BeginInput, first: BeginResult): Promise<BeginResult> {
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

async function settleClaim(
  ctx: Pipeline,
  claim: Claim | Response,
  read: ReadRequest,
  input: BeginInput,
): Promise<Response> {
  if (claim instanceof Response) return claim;
  switch (claim.outcome) {
    case "started": {
      const lease = { recordId: claim.recordId, leaseToken: claim.leaseToken };
      ctx.metrics.started++;
      const finished = ctx.timing.start(lease.recordId);
      try {
        return await ctx.mode.runClaimed(ctx, { lease, attempt: claim.attempt, read, input });
      } finally {
        finished();
      }
    }
    case "replay":
      ctx.metrics.replayed++;
      return await fromStoredResponse(claim.response, ctx.options.responseDictionaries);
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
function inProgress(ctx: Pipeline, leaseSeconds: number): Response {
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
async function storeUnavailable(ctx: Pipeline, read: ReadRequest): Promise<Response> {
  if (ctx.options.onStoreError === "fail-closed") {
    throw new IdempotencyError("STORE_UNAVAILABLE", "The idempotency store is unavailable; retry later", {
      retryAfterSeconds: STORE_RETRY_AFTER_SECONDS,
    });
  }
  ctx.metrics.failOpen++;
  return await ctx.mode.unprotected(ctx, freshRequest(read), read.info, read.caller);
}

/**
 * The handler's answer with its body read; a throw becomes a 500 `INTERNAL_ERROR`, except what `rethrow`
 * picks (a mode's own control flow).
 *
 * @param ctx The pipeline.
 * @param call Calls the handler.
 * @param rethrow Errors to let through.
 * @returns The outcome.
 */
export async function runHandler(
  ctx: Pipeline,
  call: () => Response | Promise<Response>,
  rethrow: (error: unknown) => boolean = () => false,
): Promise<HandlerOutcome> {
  const handlerStart = performance.now();
  try {
    const response = await call();
    const body = new Uint8Array(await response.arrayBuffer());
    ctx.recorder?.observe(ctx.options.functionName, "handler", (performance.now() - handlerStart) / 1000);
    return { status: response.status, headers: new Headers(response.headers), body };
  } catch (error) {
    if (rethrow(error)) throw error;
    log(ctx, "error", "the handler threw; the key is released for a retry", error);
    return { ...(await errorOutcome(internalError())), error };
  }
}

/**
 * An outcome answering `error`.
 *
 * @param error The error to answer.
 * @returns Its outcome, body read.
 */
export async function errorOutcome(error: IdempotencyError): Promise<HandlerOutcome> {
  const response = errorResponse(error);
  return {
    status: response.status,
    headers: response.headers,
    body: new Uint8Array(await response.arrayBuffer()),
  };
}

/**
 * The answer to this client of a run: the outcome, marked as not a replay.
 *
 * @param outcome What the handler answered.
 * @returns The response.
 */
export function firstResponse(outcome: HandlerOutcome): Response {
  // the outcome's headers are its own mutable copy (runHandler, errorOutcome), answered once: no second copy
  const { headers } = outcome;
  headers.delete("content-length");
  headers.set(REPLAY_HEADER, "false");
  return buildResponse(outcome.status, headers, outcome.body);
}

/**
 * A new Request with the bytes read at claim time: the handler may consume or change it without touching
 * the key, fingerprint or lease this request completes. The client's abort signal is left behind on
 * purpose: claimed work runs to the end and is stored even if the client hangs up, so its retry replays.
 *
 * @param read The request as read at claim time.
 * @returns A fresh copy.
 */
export function freshRequest(read: ReadRequest): Request {
  const { req, body } = read;
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  // Not `new Request(req, ...)`: on a request of Deno.serve that builds and follows its abort signal, which
  // costs more than copying the headers (measured)
  return new Request(req.url, {
    method: req.method,
    headers: req.headers,
    body: hasBody ? body.slice() : null,
    redirect: req.redirect,
  });
}

/**
 * Releases the key so a retry runs again; counted as `failed`. Never throws: a store failure is logged and
 * counted, and the lease runs out by itself.
 *
 * @param ctx The pipeline.
 * @param lease The run's lease.
 * @param outcome What the handler answered.
 * @param state Whether the lease was already found lost.
 */
export async function releaseKey(
  ctx: Pipeline,
  lease: Lease,
  outcome: HandlerOutcome,
  state: LeaseState,
): Promise<void> {
  ctx.metrics.failed++;
  const message = outcome.error === undefined ? `HTTP ${outcome.status}` : errorMessage(outcome.error);
  try {
    if (!(await ctx.store().fail(lease, { message, status: outcome.status }))) leaseLost(ctx, state, "fail");
  } catch (error) {
    storeFailed(ctx, "fail", error);
  }
}

/**
 * Final outcomes are stored: 2xx, and 3xx (a redirect after a POST reports work that was done, so running
 * it again would duplicate it); 4xx only with `storeClientErrors`, never the transient ones; 5xx never.
 *
 * @param status The handler's status.
 * @param options The wrapper's options.
 * @returns Whether to store it.
 */
export function isStorable(status: number, options: ResolvedIdempotencyOptions): boolean {
  if (status < 400) return true;
  return status < 500 && options.storeClientErrors && !TRANSIENT_CLIENT_ERRORS.has(status);
}

/**
 * Renews `lease` every `lockTimeoutSeconds / 2` until stopped (or, given `maxRunMs`, until that long has
 * passed: a run still going is presumed hung, and a retry may take the key over); `stop` waits for a
 * renewal under way.
 *
 * @param ctx The pipeline.
 * @param lease The run's lease.
 * @param state Marked when the lease is found lost.
 * @param maxRunMs The longest the lease is renewed.
 * @returns The handle to stop renewing.
 */
export function startRenewal(
  ctx: Pipeline,
  lease: Lease,
  state: LeaseState,
  maxRunMs = Infinity,
): { stop(): Promise<void> } {
  if (!ctx.options.renewLease) return { stop: () => Promise.resolve() };
  const until = Date.now() + maxRunMs;
  let pending = Promise.resolve();
  const timer = setInterval(() => {
    if (Date.now() > until) {
      clearInterval(timer);
      log(ctx, "warn", "still running after maxRunSeconds; the lease is no longer renewed");
      return;
    }
    pending = pending.then(() => renewOnce(ctx, lease, state));
  }, ctx.options.lockTimeoutSeconds * 500);
  return {
    stop: () => {
      clearInterval(timer);
      return pending;
    },
  };
}

async function renewOnce(ctx: Pipeline, lease: Lease, state: LeaseState): Promise<void> {
  if (state.lost) return;
  try {
    if (!(await ctx.store().extendLease(lease, ctx.options.lockTimeoutSeconds))) {
      leaseLost(ctx, state, "extendLease");
    }
  } catch (error) {
    storeFailed(ctx, "extendLease", error);
  }
}

/**
 * Counts and logs a lease found taken over (once per request).
 *
 * @param ctx The pipeline.
 * @param state The run's lease state.
 * @param during The store call that found it.
 */
export function leaseLost(ctx: Pipeline, state: LeaseState, during: string): void {
  if (state.lost) return;
  state.lost = true;
  ctx.metrics.leaseLost++;
  log(ctx, "warn", `lease lost at ${during}: another request took the key over; this result is not stored`);
}

/**
 * Counts and logs a store call that threw.
 *
 * @param ctx The pipeline.
 * @param method The store call.
 * @param error What it threw.
 */
export function storeFailed(ctx: Pipeline, method: string, error: unknown): void {
  ctx.metrics.storeErrors++;
  const policy = method === "begin" ? ` (${ctx.options.onStoreError})` : "";
  log(ctx, "error", `store ${method} failed${policy}`, error);
}

/**
 * Logs under the function's name.
 *
 * @param ctx The pipeline.
 * @param level The logger method.
 * @param message What happened.
 * @param error The error, if any.
 */
export function log(ctx: Pipeline, level: "error" | "warn", message: string, error?: unknown): void {
  const line = `[idempotency] ${ctx.options.functionName}: ${message}`;
  if (error === undefined) ctx.options.logger[level](line);
  else ctx.options.logger[level](line, error);
}

/**
 * The 500 every unexpected failure is answered with.
 *
 * @returns The error.
 */
export function internalError(): IdempotencyError {
  return new IdempotencyError("INTERNAL_ERROR", "The function failed; retry with the same idempotency key");
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
