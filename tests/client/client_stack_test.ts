/**
 * The client helper against the running stack (gateway, real Postgres): a lost answer, a database outage
 * and a refused request, each counted in rows of the function's own table.
 *
 * These tests stop and start PostgreSQL (scripts/stack.sh db-stop / db-start on the stack's ports), so
 * scripts/test.sh runs them in a step of their own.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import { idempotentFetch, invokeIdempotent } from "../../client/mod.ts";
import { anonKey, API_URL, countRows, documentBody, e2eTest } from "../e2e/support.ts";
import { startLossyProxy } from "./lossy_proxy.ts";

const FUNCTION = "/functions/v1/process-document";
const STACK = new URL("../../scripts/stack.sh", import.meta.url).pathname;

async function stack(command: "db-stop" | "db-start"): Promise<void> {
  const { code, stderr } = await new Deno.Command(STACK, { args: [command], stdout: "null", stderr: "piped" })
    .output();
  if (code !== 0) throw new Error(`stack.sh ${command} failed: ${new TextDecoder().decode(stderr)}`);
}

/** A fetch that records the status of every answer (or "network" for a failure) in `seen`. */
function recordingFetch(seen: (number | "network")[]): typeof fetch {
  return async (input, init) => {
    try {
      const response = await fetch(input, init);
      seen.push(response.status);
      return response;
    } catch (error) {
      seen.push("network");
      throw error;
    }
  };
}

e2eTest(
  "client: an answer lost after the work was done is retried and answered by the replay; one row",
  async (ctx) => {
    const user = await ctx.newUser();
    const proxy = startLossyProxy(Number(new URL(API_URL).port), 1);
    ctx.defer(() => proxy.close());
    const seen: (number | "network")[] = [];
    const result = await idempotentFetch<{ document_id: string }>(`${proxy.url}${FUNCTION}`, {
      headers: { authorization: `Bearer ${user.token}` },
      body: documentBody(),
      fetch: recordingFetch(seen),
      baseDelayMs: 50,
    });
    assert.equal(proxy.dropped, 1, "the proxy lost the first answer");
    assert.deepEqual(seen, ["network", 201]);
    assert.equal(result.error, null);
    assert.equal(result.attempts, 2);
    assert.equal(result.replayed, true, "the second attempt got the stored answer");
    assert.match(result.data!.document_id, /^[0-9a-f-]{36}$/);
    assert.equal(await countRows(ctx.sql, "documents", user.id), 1, "the work ran once");
    assert.equal(await countRows(ctx.sql, "document_processing_jobs", user.id), 1);
  },
);

e2eTest("client: 503 while the database is stopped, then success once it is back; one row", async (ctx) => {
  const user = await ctx.newUser();
  await stack("db-stop");
  let restarted: Promise<void> | undefined;
  try {
    const seen: (number | "network")[] = [];
    restarted = new Promise((resolve) => setTimeout(resolve, 1500)).then(() => stack("db-start"));
    const result = await idempotentFetch(`${API_URL}${FUNCTION}`, {
      headers: { authorization: `Bearer ${user.token}` },
      body: documentBody(),
      fetch: recordingFetch(seen),
      maxAttempts: 20,
      deadlineMs: 60_000,
    });
    await restarted;
    assert.equal(result.error, null, `error: ${result.error?.message}`);
    assert.equal(seen[0], 503, "the first attempt met the outage");
    assert.equal(seen.at(-1), 201);
    assert.ok(seen.slice(0, -1).every((s) => s === 503), `only 503s before the success: ${seen}`);
    assert.equal(result.attempts, seen.length);
    assert.equal(result.replayed, false, "no attempt ran before the database came back");
  } finally {
    await (restarted ?? stack("db-start")).catch(() => stack("db-start"));
  }
  assert.equal(await countRows(ctx.sql, "documents", user.id), 1, "the work ran once");
});

e2eTest(
  "client: 422 (the key reused with another body) is not retried; nothing more is written",
  async (ctx) => {
    const user = await ctx.newUser();
    const headers = { authorization: `Bearer ${user.token}` };
    const first = await idempotentFetch(`${API_URL}${FUNCTION}`, { headers, body: documentBody() });
    assert.equal(first.error, null);
    const seen: (number | "network")[] = [];
    const reused = await idempotentFetch(`${API_URL}${FUNCTION}`, {
      headers,
      body: documentBody("another title"),
      idempotencyKey: first.key,
      fetch: recordingFetch(seen),
    });
    assert.deepEqual(seen, [422]);
    assert.equal(reused.attempts, 1);
    assert.equal(reused.error?.status, 422);
    assert.equal(reused.error?.code, "KEY_REUSED_WITH_DIFFERENT_REQUEST");
    assert.equal(await countRows(ctx.sql, "documents", user.id), 1);
  },
);

e2eTest(
  "client: invokeIdempotent through supabase-js: the first run, then the replay under the same key",
  async (ctx) => {
    const user = await ctx.newUser();
    const supabase = createClient(API_URL, await anonKey(), {
      global: { headers: { Authorization: `Bearer ${user.token}` } },
      auth: { persistSession: false, autoRefreshToken: false },
    });
    const body = documentBody();
    const first = await invokeIdempotent<{ document_id: string }>(supabase, "process-document", { body });
    const again = await invokeIdempotent<{ document_id: string }>(supabase, "process-document", {
      body,
      idempotencyKey: first.key,
    });
    assert.equal(first.error, null);
    assert.equal(first.replayed, false);
    assert.equal(again.replayed, true);
    assert.equal(again.attempts, 1);
    assert.equal(again.data?.document_id, first.data?.document_id);
    assert.equal(await countRows(ctx.sql, "documents", user.id), 1);
  },
);
