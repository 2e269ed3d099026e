/**
 * The metrics endpoint, scraped by a real Prometheus (Debian's `prometheus`) that this test starts on
 * PROMETHEUS_PORT (default API_PORT + 11): after a known sequence of requests to process-document through
 * the gateway, PromQL over Prometheus's HTTP API returns exactly the expected increases.
 */
import assert from "node:assert/strict";
import { callFunction, documentBody, e2eTest, serviceRoleKey } from "../e2e/support.ts";
import { signJwt } from "../support/jwt.ts";

const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";
const API_PORT = Number(new URL(API_URL).port);
const PROM_PORT = Number(Deno.env.get("PROMETHEUS_PORT") ?? API_PORT + 11);
const PROM_URL = `http://127.0.0.1:${PROM_PORT}`;
const ENDPOINT = `${API_URL}/functions/v1/idempotency-metrics`;
const FN = "process-document";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

e2eTest("metrics endpoint: service role only, GET only, Prometheus text", async (t) => {
  const user = await t.newUser();
  const anon = await signJwt({ role: "anon" });
  const cases: [Record<string, string>, number, string | null][] = [
    [{}, 401, null],
    [{ authorization: `Bearer ${anon}` }, 403, "FORBIDDEN"],
    [{ authorization: `Bearer ${user.token}` }, 403, "FORBIDDEN"],
  ];
  for (const [headers, status, code] of cases) {
    const res = await fetch(ENDPOINT, { headers });
    const body = await res.json();
    assert.equal(res.status, status);
    if (code) assert.equal(body.error.code, code);
  }
  const service = { authorization: `Bearer ${await serviceRoleKey()}` };
  const post = await fetch(ENDPOINT, { method: "POST", headers: service });
  assert.equal(post.status, 405);
  assert.equal((await post.json()).error.code, "METHOD_NOT_ALLOWED");
  const res = await fetch(ENDPOINT, { headers: service });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.match(text, /^idempotency_store_up 1$/m);
  assert.match(text, /^# TYPE idempotency_claim_duration_seconds histogram$/m);
});

async function startPrometheus(dir: string): Promise<Deno.ChildProcess> {
  const target = new URL(API_URL).host;
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    `global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: idempotency
    metrics_path: /functions/v1/idempotency-metrics
    authorization:
      credentials: ${await serviceRoleKey()}
    static_configs:
      - targets: ["${target}"]
`,
  );
  const process = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${PROM_PORT}`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`${PROM_URL}/-/ready`);
      await res.body?.cancel();
      if (res.ok) return process;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  process.kill("SIGKILL");
  throw new Error(`prometheus did not become ready on ${PROM_PORT}`);
}

/** One PromQL instant query; a missing series reads as 0. */
async function promql(query: string): Promise<number> {
  const res = await fetch(`${PROM_URL}/api/v1/query?query=${encodeURIComponent(query)}`);
  const body = await res.json();
  assert.equal(body.status, "success", JSON.stringify(body));
  const [first] = body.data.result as { value: [number, string] }[];
  return first ? Number(first.value[1]) : 0;
}

/**
 * Polls every query until each equals its expected value (flushes and scrapes are each a second apart),
 * then checks that they stay there: a later, larger value would mean counts were doubled or made up.
 */
async function eventually(expected: Map<string, number>): Promise<void> {
  const read = async () =>
    new Map(await Promise.all([...expected.keys()].map(async (q) => [q, await promql(q)] as const)));
  let got = await read();
  for (let i = 0; i < 40 && [...expected].some(([q, v]) => got.get(q) !== v); i++) {
    await sleep(500);
    got = await read();
  }
  assert.deepEqual(got, expected);
  await sleep(2500);
  assert.deepEqual(await read(), expected);
}

/** Waits for Prometheus's first successful scrape of the endpoint. */
async function firstScrape(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if (await promql(`max(up{job="idempotency"})`) === 1) return;
    await sleep(200);
  }
  throw new Error("Prometheus never scraped the endpoint successfully");
}

e2eTest(
  "Prometheus scrapes the endpoint; PromQL returns the counts of a known request sequence",
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "idem-prometheus-" });
    const prometheus = await startPrometheus(dir);
    try {
      const user = await t.newUser();
      const outcome = (name: string) => `sum(idempotency_outcomes_total{function="${FN}",outcome="${name}"})`;
      const claims = `sum(idempotency_claim_duration_seconds_count{function="${FN}"})`;
      const handlers = `sum(idempotency_handler_duration_seconds_count{function="${FN}"})`;
      // let earlier tests' counts reach the database (flushed every second) and Prometheus (scraped every second)
      await firstScrape();
      await sleep(2500);
      const queries = [
        outcome("started"),
        outcome("replayed"),
        outcome("mismatched"),
        outcome("failed"),
        claims,
        handlers,
      ];
      const before = await Promise.all(queries.map(promql));

      // the sequence: a first run and two replays; the same key with another body (422); an invalid request
      // under a second key (400, released: failed)
      const key = t.newKey();
      const body = documentBody();
      assert.equal((await callFunction(FN, { token: user.token, key, body })).status, 201);
      for (let i = 0; i < 2; i++) {
        assert.equal((await callFunction(FN, { token: user.token, key, body })).replay, "true");
      }
      assert.equal(
        (await callFunction(FN, { token: user.token, key, body: documentBody("other") })).status,
        422,
      );
      assert.equal(
        (await callFunction(FN, { token: user.token, key: t.newKey(), body: { title: "" } })).status,
        400,
      );

      const expected = [2, 2, 1, 1, 5, 2];
      await eventually(new Map(queries.map((query, i) => [query, before[i]! + expected[i]!])));
      assert.equal(await promql(`max(up{job="idempotency"})`), 1);

      // every query of the Grafana dashboard runs on these series; those over counters and stats have data
      const dashboard = JSON.parse(
        await Deno.readTextFile(new URL("../../docs/grafana-idempotency.json", import.meta.url)),
      );
      for (const panel of dashboard.panels) {
        for (const target of panel.targets) {
          const query = target.expr.replaceAll("$function", ".*");
          const res = await fetch(`${PROM_URL}/api/v1/query?query=${encodeURIComponent(query)}`);
          const body = await res.json();
          assert.equal(body.status, "success", `${panel.title}: ${query}: ${JSON.stringify(body)}`);
          if (!/rate\(|histogram_quantile/.test(query)) {
            assert.ok(body.data.result.length > 0, `${panel.title}: no data`);
          }
        }
      }
      assert.equal(await promql("max(idempotency_store_up)"), 1);
      assert.ok(await promql(`sum(idempotency_keys{function="${FN}",status="completed"})`) >= 1);
    } finally {
      prometheus.kill("SIGTERM");
      await prometheus.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
);
