/**
 * Exactly-once under crashes, with PostgreSQL at production durability:
 *   1. the serving process is SIGKILLed at named points of keyed requests (several keys in flight at once);
 *      after a restart and retries past the 1 s lease, every key has exactly one set of side-effect rows and,
 *      for start-training's trainer step, exactly one effective external call;
 *   2. PostgreSQL is restarted (`-m fast`) and crashed (`-m immediate`) in the middle of a burst of distinct
 *      and duplicate keys; after the clients retry with the same keys, every key has exactly one set.
 * Prints the counts. CRASH_TRIALS (default 2) sets the trials per point.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { stepKeyOf } from "../../supabase/functions/_shared/idempotency/steps.ts";
import { TRAINER_STEP } from "../../supabase/functions/start-training/index.ts";
import { signJwt } from "../support/jwt.ts";
import {
  type Child,
  DB_URL,
  restartPostgres,
  sleep,
  startFunctions,
  startTrainer,
  withProductionDurability,
} from "./support.ts";

const TRIALS = Number(Deno.env.get("CRASH_TRIALS") ?? "2");
/** The counts also go to this file, which scripts/test.sh prints (its deno test runs --quiet). */
const REPORT = new URL("../../.local/logs/crash-report.txt", import.meta.url);

/** Prints a line of the report and appends it to {@link REPORT}. */
async function report(line: string): Promise<void> {
  console.log(line);
  await Deno.writeTextFile(REPORT, `${line}\n`, { append: true, create: true });
}
const KEYS_PER_TRIAL = 4;
const hyperparameters = { learning_rate: 0.1, epochs: 1, batch_size: 1 };

type FunctionName = "process-document" | "generate-training-data" | "start-training";

/** Each function's body for a key: the key is in a column of the side-effect row, to count them by key. */
function bodyFor(fn: FunctionName, key: string): unknown {
  switch (fn) {
    case "process-document":
      return { title: key, content: "Crash-tested. Exactly once." };
    case "generate-training-data":
      return { name: key, task: "summarization", count: 3 };
    case "start-training":
      return { model_name: key, hyperparameters };
  }
}

/** The side-effect rows of one key, per table. */
async function sideEffects(sql: postgres.Sql, fn: FunctionName, key: string): Promise<number[]> {
  switch (fn) {
    case "process-document": {
      const [r] = await sql<{ docs: number; jobs: number }[]>`
        select (select count(*)::int from public.documents where title = ${key}) as docs,
          (select count(*)::int from public.document_processing_jobs j join public.documents d on d.id = j.document_id
           where d.title = ${key}) as jobs`;
      return [r!.docs, r!.jobs];
    }
    case "generate-training-data": {
      const [r] = await sql<{ sets: number; stats: number }[]>`
        select (select count(*)::int from public.training_datasets where name = ${key}) as sets,
          (select count(*)::int from public.training_dataset_stats s join public.training_datasets d
           on d.id = s.dataset_id where d.name = ${key}) as stats`;
      return [r!.sets, r!.stats];
    }
    case "start-training": {
      const [r] = await sql<{ jobs: number }[]>`
        select count(*)::int as jobs from public.training_jobs where model_name = ${key}`;
      return [r!.jobs];
    }
  }
}

/** Holds the serving process; restarts it when it died (a crash, or the driver defect on a DB restart). */
class Functions {
  child!: Child;
  restarts = 0;
  constructor(readonly trainerUrl: string) {}
  async start(): Promise<void> {
    this.child = await startFunctions(this.trainerUrl);
  }
  #starting: Promise<void> | null = null;
  /** One restart however many clients notice the death at once (single flight). */
  ensure(): Promise<void> {
    if (this.child.alive()) return Promise.resolve();
    this.#starting ??= (async () => {
      await this.child.exited;
      this.restarts++;
      await this.start();
    })().finally(() => this.#starting = null);
    return this.#starting;
  }
  post(fn: FunctionName, token: string, key: string, crashAt?: string): Promise<Response> {
    const headers: Record<string, string> = {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "idempotency-key": key,
    };
    if (crashAt) headers["x-test-crash-at"] = crashAt;
    return fetch(`http://127.0.0.1:${this.child.port}/functions/v1/${fn}`, {
      method: "POST",
      headers,
      body: JSON.stringify(bodyFor(fn, key)),
    });
  }
  /** Retries `key` (the same request) until it gets its final 201, restarting the server when it died. */
  async settle(fn: FunctionName, token: string, key: string): Promise<{ body: string; attempts: number }> {
    let last = "";
    const deadline = Date.now() + 60_000;
    for (let attempt = 1; Date.now() < deadline; attempt++) {
      await this.ensure();
      try {
        const res = await this.post(fn, token, key);
        const text = await res.text();
        last = `${res.status} ${text}`;
        if (res.status === 201) return { body: text, attempts: attempt };
        assert.ok([409, 500, 503].includes(res.status), `unexpected ${res.status} ${text}`);
      } catch (error) {
        // connection refused or reset: the server died or the database is restarting
        last = String(error);
      }
      await sleep(150);
    }
    throw new Error(`${fn} ${key} never completed; last answer: ${last}`);
  }
}

interface PointReport {
  fn: FunctionName;
  point: string;
  crashes: number;
  keys: number;
  rowSets: string;
  trainerCalls?: number;
  trainerJobs?: number;
}

Deno.test("crash harness: SIGKILL at every point, PostgreSQL restarted and crashed mid-burst", async (t) => {
  await Deno.remove(REPORT).catch(() => {});
  const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });
  const trainer = await startTrainer();
  const trainerUrl = `http://127.0.0.1:${trainer.port}`;
  const [user] = await sql<{ id: string }[]>`
    insert into auth.users (email) values (${`crash-${crypto.randomUUID()}@test.local`}) returning id`;
  const userId = user!.id;
  const token = await signJwt({ sub: userId, role: "authenticated", aud: "authenticated" });
  const functions = new Functions(trainerUrl);
  try {
    await withProductionDurability(async () => {
      await report(
        `production durability on; ${TRIALS} trial(s) per point, ${KEYS_PER_TRIAL} keys in flight each`,
      );
      await functions.start();
      await t.step("SIGKILL of the serving process at each named point", async () => {
        const plan: [FunctionName, string[]][] = [
          ["process-document", ["after-claim", "mid-writes", "after-handler", "after-commit"]],
          ["generate-training-data", ["mid-writes", "after-commit"]],
          ["start-training", ["mid-step", "after-step", "after-commit"]],
        ];
        const reports: PointReport[] = [];
        for (const [fn, points] of plan) {
          for (const point of points) {
            const entry: PointReport = { fn, point, crashes: 0, keys: 0, rowSets: "" };
            const counts: number[] = [];
            let trainerCalls = 0, trainerJobs = 0;
            for (let trial = 0; trial < TRIALS; trial++) {
              await functions.ensure();
              const keys = Array.from({ length: KEYS_PER_TRIAL }, () => `crash-${crypto.randomUUID()}`);
              // every key asks for the crash: the first to reach the point kills the process with the rest
              // of the trial's requests wherever they are
              await Promise.all(
                keys.map((key) =>
                  functions.post(fn, token, key, point).then((r) => r.body?.cancel(), () => undefined)
                ),
              );
              const { code, signal } = await Promise.race([
                functions.child.exited,
                sleep(5000).then(() => ({ code: -1, signal: null })),
              ]);
              assert.equal(
                signal,
                "SIGKILL",
                `${fn} ${point}: the process must have been killed (code ${code})`,
              );
              entry.crashes++;
              await sleep(1100); // the 1 s lease runs out
              const answers = await Promise.all(keys.map((key) => functions.settle(fn, token, key)));
              for (const [i, key] of keys.entries()) {
                const effects = await sideEffects(sql, fn, key);
                assert.deepEqual(effects, effects.map(() => 1), `${fn} ${point} ${key}: ${effects}`);
                counts.push(...effects);
                const again = await functions.post(fn, token, key);
                assert.equal(again.headers.get("x-idempotency-replay"), "true");
                assert.equal(await again.text(), answers[i]!.body, "the retry replays the committed answer");
                if (fn === "start-training") {
                  const stepKey = stepKeyOf({ functionName: fn, userId, key }, TRAINER_STEP);
                  const stats = await (await fetch(`${trainerUrl}/stats?key=${stepKey}`)).json();
                  assert.equal(stats.jobs, 1, `${key}: exactly one effective trainer job`);
                  trainerCalls += stats.calls;
                  trainerJobs += stats.jobs;
                  const [row] =
                    await sql`select trainer_job_id from public.training_jobs where model_name = ${key}`;
                  assert.equal(row?.trainer_job_id, JSON.parse(answers[i]!.body).trainer_job_id);
                }
              }
              entry.keys += keys.length;
            }
            entry.rowSets = `${Math.min(...counts)}..${Math.max(...counts)}`;
            if (fn === "start-training") Object.assign(entry, { trainerCalls, trainerJobs });
            reports.push(entry);
          }
        }
        await report(
          "crash point                          crashes  keys  rows per key (min..max)  trainer calls/jobs",
        );
        for (const r of reports) {
          const trainerText = r.trainerCalls === undefined ? "-" : `${r.trainerCalls}/${r.trainerJobs}`;
          await report(
            `${`${r.fn} ${r.point}`.padEnd(37)}${String(r.crashes).padStart(7)}${
              String(r.keys).padStart(6)
            }  ${r.rowSets.padEnd(23)}  ${trainerText}`,
          );
        }
      });

      for (const mode of ["fast", "immediate"] as const) {
        await t.step(`PostgreSQL stopped -m ${mode} mid-burst: every key has exactly one set`, async () => {
          await functions.ensure();
          const keys = Array.from({ length: 30 }, () => `pgcrash-${crypto.randomUUID()}`);
          const fn: FunctionName = "process-document";
          // each key twice, concurrently: distinct and duplicate keys in one burst
          const burst = [...keys, ...keys].map(async (key, i) => {
            await sleep(i * 5);
            return await functions.settle(fn, token, key);
          });
          const restartsBefore = functions.restarts;
          await sleep(60);
          await restartPostgres(mode);
          const answers = await Promise.all(burst);

          let sets = 0;
          for (const key of keys) {
            const effects = await sideEffects(sql, fn, key);
            const i = keys.indexOf(key);
            assert.deepEqual(
              effects,
              [1, 1],
              `${mode} ${key}: ${effects}; answers ${answers[i]!.body} / ${answers[i + keys.length]!.body}`,
            );
            sets++;
          }
          for (const [i, key] of keys.entries()) {
            assert.equal(
              answers[i]!.body,
              answers[i + keys.length]!.body,
              `${key}: both clients got one answer`,
            );
          }
          const retries = answers.reduce((n, a) => n + a.attempts - 1, 0);
          await report(
            `pg_ctl -m ${mode}: ${keys.length} keys x 2 clients, ${sets} keys with exactly one set, ` +
              `${retries} client retries; the serving process died ${
                functions.restarts - restartsBefore
              } time(s) and was restarted (the postgres.js 3.4.9 null-socket defect, fixed by issue 8)`,
          );
        });
      }
    });
  } finally {
    await functions.child?.stop();
    await trainer.stop();
    await sql`delete from auth.users where id = ${userId}`.catch(() => {});
    await sql`delete from public.idempotency_keys where idempotency_key like 'crash-%' or idempotency_key like 'pgcrash-%'`
      .catch(() => {});
    await sql.end();
  }
});
