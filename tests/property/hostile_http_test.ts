/**
 * Hostile input over HTTP (docs/faults.md), against a gateway of the test's own: oversized, truncated and
 * malformed bodies, odd header values, every HTTP method, absurd content types, and thousands of distinct
 * keys from one user. Each answer is a documented 4xx with the JSON error body (never a 5xx), the server's
 * memory stays flat, and a completed record that the hostile requests aim at does not change.
 */

import assert from "node:assert/strict";
import { newUser, psql, report, startGateway } from "../faults/support.ts";

const DISTINCT_KEYS = Number(Deno.env.get("HOSTILE_KEYS") ?? 3000);
const GOOD_BODY = JSON.stringify({ title: "Target", content: "Revenue grew. Costs fell." });

/** A hostile request: its init, key and the error codes its documented answer may carry. */
interface Hostile {
  label: string;
  init: RequestInit;
  key?: string;
  codes: string[];
}

function hostileRequests(target: string): Hostile[] {
  const bad = ["INVALID_REQUEST"];
  const list: Hostile[] = [
    {
      label: "oversized body (8 MiB)",
      init: { body: JSON.stringify({ title: "x", content: "a".repeat(8 << 20) }) },
      codes: bad,
    },
    { label: "truncated JSON", init: { body: GOOD_BODY.slice(0, 20) }, codes: bad },
    { label: "binary body", init: { body: new Uint8Array([0xff, 0xfe, 0, 1, 2, 0x80]) }, codes: bad },
    { label: "JSON array", init: { body: "[1,2,3]" }, codes: bad },
    { label: "deeply nested JSON", init: { body: "[".repeat(100_000) + "]".repeat(100_000) }, codes: bad },
    { label: "empty body", init: { body: "" }, codes: bad },
    {
      label: "same key, other body",
      init: { body: GOOD_BODY.replace("Target", "Other") },
      key: target,
      codes: ["KEY_REUSED_WITH_DIFFERENT_REQUEST"],
    },
    { label: "key with obs-text", init: { body: GOOD_BODY }, key: "abc\u00ff", codes: ["INVALID_KEY"] },
    { label: "key with a tab inside", init: { body: GOOD_BODY }, key: "ab\tcd", codes: ["INVALID_KEY"] },
    {
      label: "key of 257 characters",
      init: { body: GOOD_BODY },
      key: "k".repeat(257),
      codes: ["INVALID_KEY"],
    },
    {
      label: "key with a parameter",
      init: { body: GOOD_BODY },
      key: `"${target}";a=1`,
      codes: ["INVALID_KEY"],
    },
    {
      label: "unterminated quoted key",
      init: { body: GOOD_BODY },
      key: `"${target}`,
      codes: ["INVALID_KEY"],
    },
    {
      label: "two different keys",
      init: { body: GOOD_BODY, headers: { "x-idempotency-key": "other-key" } },
      key: target,
      codes: ["KEY_CONFLICT"],
    },
    {
      label: "bad bearer token",
      init: { body: GOOD_BODY, headers: { authorization: "Bearer a.b.c" } },
      codes: ["INVALID_JWT"],
    },
  ];
  for (const method of ["GET", "PUT", "PATCH", "DELETE", "PROPFIND", "FOO", "TRACE-X"]) {
    list.push({
      label: `method ${method}`,
      init: { method, body: method === "GET" ? null : GOOD_BODY },
      codes: ["METHOD_NOT_ALLOWED"],
    });
  }
  for (
    const type of [
      "application/x-\u00ff; boundary=;;;",
      "multipart/form-data; boundary=",
      "text/html",
      "*/*",
      "application/json; charset=utf-99",
    ]
  ) {
    list.push({
      label: `content type ${type}`,
      init: { body: "<x/>", headers: { "content-type": type } },
      codes: bad,
    });
  }
  return list;
}

async function send(url: string, token: string, h: Hostile): Promise<{ status: number; code: string }> {
  const headers = new Headers({ authorization: `Bearer ${token}`, "content-type": "application/json" });
  for (const [name, value] of new Headers(h.init.headers)) headers.set(name, value);
  headers.set("idempotency-key", h.key ?? `hostile-${crypto.randomUUID()}`);
  const res = await fetch(`${url}/functions/v1/process-document`, { method: "POST", ...h.init, headers });
  const text = await res.text();
  assert.equal(res.headers.get("content-type"), "application/json", `${h.label}: ${text.slice(0, 100)}`);
  const body = JSON.parse(text);
  assert.equal(typeof body.error?.message, "string", h.label);
  return { status: res.status, code: body.error?.code };
}

Deno.test({
  name:
    `hostile HTTP input: documented 4xx with a JSON error, ${DISTINCT_KEYS} keys from one user, memory flat`,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const user = await newUser();
    const gateway = await startGateway(0);
    try {
      const target = `hostile-target-${crypto.randomUUID()}`;
      const first = await fetch(`${gateway.url}/functions/v1/process-document`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${user.token}`,
          "content-type": "application/json",
          "idempotency-key": target,
        },
        body: GOOD_BODY,
      });
      await first.body?.cancel();
      assert.equal(first.status, 201);
      const rowOf = () =>
        psql(
          `select status, attempt_count, replay_count, status_code, md5(response), request_fingerprint, expires_at, locked_until, lease_token
          from public.idempotency_keys where idempotency_key = '${target}' and user_id = '${user.id}'`,
        );
      const before = await rowOf();

      for (const h of hostileRequests(target)) {
        const answer = await send(gateway.url, user.token, h);
        assert.ok(answer.status >= 400 && answer.status < 500, `${h.label}: ${answer.status} ${answer.code}`);
        assert.ok(h.codes.includes(answer.code), `${h.label}: ${answer.code}, documented: ${h.codes}`);
      }

      const flood = async (n: number) => {
        for (let i = 0; i < n; i += 50) {
          await Promise.all(Array.from({ length: Math.min(50, n - i) }, async () => {
            const a = await send(gateway.url, user.token, { label: "flood", init: { body: "{" }, codes: [] });
            assert.equal(a.code, "INVALID_REQUEST");
          }));
        }
      };
      await flood(500); // warm up: JIT, pools, allocator
      const rssStart = await gateway.rssKiB();
      await flood(DISTINCT_KEYS);
      // RSS first climbs to the heap's and the allocator's working size, then stays: a leak grows with every
      // key, so a second flood of as many keys would grow it as much again
      const rssBefore = await gateway.rssKiB();
      await flood(DISTINCT_KEYS);
      const rssAfter = await gateway.rssKiB();
      const after = await rowOf();
      const documents = await psql(`select count(*) from public.documents where user_id = '${user.id}'`);
      await report(
        `hostile input: ${
          hostileRequests(target).length
        } kinds answered 4xx; ${DISTINCT_KEYS} distinct keys: ` +
          `server RSS ${(rssStart / 1024).toFixed(1)} MiB, after the first ${DISTINCT_KEYS} ` +
          `${(rssBefore / 1024).toFixed(1)} MiB, after ${DISTINCT_KEYS} more ${
            (rssAfter / 1024).toFixed(1)
          } MiB`,
      );
      assert.equal(after, before, "the completed record changed");
      assert.equal(documents, "1", "a hostile request ran the work");
      assert.ok(
        rssAfter - rssBefore < 16 * 1024,
        `memory grew by ${rssAfter - rssBefore} KiB over the second ${DISTINCT_KEYS} keys`,
      );
      assert.ok(gateway.alive());
    } finally {
      await gateway.stop();
      await psql(`delete from auth.users where id = '${user.id}'`);
    }
  },
});
