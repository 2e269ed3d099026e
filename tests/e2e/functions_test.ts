/**
 * Each function's real work over HTTP (start-training, generate-training-data, process-document) and a
 * client calling them with supabase-js, with rows checked in their tables.
 */

import assert from "node:assert/strict";
import { createClient, FunctionsHttpError } from "@supabase/supabase-js";
import { anonKey, API_URL, callFunction, countRows, documentBody, e2eTest, keyRow } from "./support.ts";

const hyperparameters = { learning_rate: 0.0003, epochs: 3, batch_size: 16 };

e2eTest("process-document stores the document and its job with the computed figures", async (t) => {
  const user = await t.newUser();
  const content = "Solar panels cut costs. Solar output rises in summer. Panels need little upkeep.";
  const res = await callFunction("process-document", {
    token: user.token,
    key: t.newKey(),
    body: { title: "Solar", content, operations: ["keywords", "summary"], max_keywords: 2 },
  });
  assert.equal(res.status, 201);
  assert.deepEqual(res.body.operations, ["summary", "keywords"]);
  assert.deepEqual(res.body.result, {
    summary: "Solar panels cut costs.",
    keywords: [{ word: "solar", count: 2 }, { word: "panels", count: 2 }],
  });
  const [doc] = await t.sql`
    select d.title, d.content, d.word_count, d.content_sha256, encode(extensions.digest(d.content, 'sha256'), 'hex') as db_sha,
           j.status, j.operations, j.result, j.user_id as job_user
    from public.documents d join public.document_processing_jobs j on j.document_id = d.id
    where d.id = ${res.body.document_id} and j.id = ${res.body.job_id} and d.user_id = ${user.id}`;
  assert.equal(doc!.content, content);
  assert.equal(doc!.word_count, 13);
  assert.equal(res.body.word_count, 13);
  assert.equal(doc!.content_sha256, doc!.db_sha, "the function's SHA-256 must match Postgres's");
  assert.equal(res.body.content_sha256, doc!.db_sha);
  assert.equal(doc!.status, "completed");
  assert.deepEqual(doc!.operations, ["summary", "keywords"]);
  assert.deepEqual(doc!.result, res.body.result);
  assert.equal(doc!.job_user, user.id);
});

e2eTest(
  "process-document stores its answer against its response dictionary (zdict) and replays the same answer",
  async (t) => {
    const user = await t.newUser();
    const key = t.newKey();
    const content = "Freight costs rose in every region. The tariff on imports stayed flat. Margins held.";
    const body = { title: "Freight review", content, operations: ["summary", "keywords", "statistics"] };
    const first = await callFunction("process-document", { token: user.token, key, body });
    assert.equal(first.status, 201);
    const [row] = await t.sql`
    select response_encoding, octet_length(response) as stored_bytes from public.idempotency_keys
    where idempotency_key = ${key} and user_id = ${user.id}`;
    assert.equal(row!.response_encoding, "zdict");
    const jsonBytes = new TextEncoder().encode(JSON.stringify(first.body)).byteLength;
    assert.ok(
      row!.stored_bytes < jsonBytes / 2,
      `${row!.stored_bytes} stored bytes for ${jsonBytes} of JSON`,
    );
    const retry = await callFunction("process-document", { token: user.token, key, body });
    assert.equal(retry.status, 201);
    assert.equal(retry.replay, "true");
    assert.deepEqual(retry.body, first.body);
  },
);

e2eTest("start-training queues one job per key, and replays it", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = { model_name: "gpt-small-v2", hyperparameters };
  const first = await callFunction("start-training", { token: user.token, key, body });
  assert.equal(first.status, 201);
  assert.equal(first.replay, "false");
  assert.equal(first.body.status, "queued");
  assert.equal(first.body.dataset_id, null);
  assert.deepEqual(first.body.hyperparameters, hyperparameters);
  const retry = await callFunction("start-training", { token: user.token, key, body });
  assert.equal(retry.replay, "true");
  assert.equal(retry.text, first.text);
  const rows = await t
    .sql`select id, model_name, hyperparameters, status from public.training_jobs where user_id = ${user.id}`;
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.id, first.body.job_id);
  assert.deepEqual(rows[0]!.hyperparameters, hyperparameters);
});

e2eTest(
  "start-training refuses bad hyperparameters with 400 naming the field, writing nothing",
  async (t) => {
    const user = await t.newUser();
    const cases: [unknown, string][] = [
      [
        { model_name: "m", hyperparameters: { ...hyperparameters, learning_rate: 0 } },
        "hyperparameters.learning_rate",
      ],
      [{ model_name: "m", hyperparameters: { ...hyperparameters, epochs: 101 } }, "hyperparameters.epochs"],
      [{ model_name: "m", hyperparameters: { learning_rate: 0.1, epochs: 1 } }, "hyperparameters.batch_size"],
      [{ model_name: "", hyperparameters }, "model_name"],
      [{ hyperparameters }, "model_name"],
    ];
    for (const [body, field] of cases) {
      const res = await callFunction("start-training", { token: user.token, key: t.newKey(), body });
      assert.equal(res.status, 400, field);
      assert.equal(res.body.error.code, "INVALID_REQUEST", field);
      assert.ok(res.body.error.message.startsWith(`${field}: `), res.body.error.message);
    }
    assert.equal(await countRows(t.sql, "training_jobs", user.id), 0);
  },
);

e2eTest("generate-training-data stores a deterministic dataset and its stats", async (t) => {
  const user = await t.newUser();
  const body = { name: "Reviews", task: "classification", count: 120, seed: 7, labels: ["spam", "ham"] };
  const a = await callFunction("generate-training-data", { token: user.token, key: t.newKey(), body });
  const b = await callFunction("generate-training-data", { token: user.token, key: t.newKey(), body });
  assert.equal(a.status, 201);
  assert.equal(b.status, 201);
  assert.equal(a.replay, "false");
  assert.notEqual(a.body.dataset_id, b.body.dataset_id, "two keys are two datasets");
  assert.equal(a.body.example_count, 120);
  assert.equal(a.body.preview.length, 3);

  const datasets = await t.sql`
    select d.id, d.examples, d.example_count, s.example_count as stats_count, s.avg_prompt_chars,
           s.avg_completion_chars, s.label_counts, s.user_id as stats_user
    from public.training_datasets d join public.training_dataset_stats s on s.dataset_id = d.id
    where d.user_id = ${user.id} order by d.created_at`;
  assert.equal(datasets.length, 2);
  assert.deepEqual(
    datasets[0]!.examples,
    datasets[1]!.examples,
    "the same seed must generate the same examples",
  );
  assert.equal(datasets[0]!.examples.length, 120);
  assert.deepEqual(datasets[0]!.examples.slice(0, 3), a.body.preview);
  const labels = datasets[0]!.label_counts;
  assert.deepEqual(Object.keys(labels).sort(), ["ham", "spam"]);
  assert.equal(labels.ham + labels.spam, 120);
  assert.deepEqual(labels, a.body.stats.label_counts);
  assert.equal(Number(datasets[0]!.avg_prompt_chars), a.body.stats.avg_prompt_chars);
  assert.equal(Number(datasets[0]!.avg_completion_chars), a.body.stats.avg_completion_chars);
  assert.equal(datasets[0]!.stats_user, user.id);
});

e2eTest("generate-training-data: count outside 1..1000 is a 400 and nothing is stored", async (t) => {
  const user = await t.newUser();
  for (const count of [0, 1001]) {
    const res = await callFunction("generate-training-data", {
      token: user.token,
      key: t.newKey(),
      body: { name: "n", task: "summarization", count },
    });
    assert.equal(res.status, 400);
    assert.match(res.body.error.message, /^count: /);
  }
  const max = await callFunction("generate-training-data", {
    token: user.token,
    key: t.newKey(),
    body: { name: "n", task: "summarization", count: 1000 },
  });
  assert.equal(max.status, 201);
  assert.equal(await countRows(t.sql, "training_datasets", user.id), 1);
  assert.equal(await countRows(t.sql, "training_dataset_stats", user.id), 1);
});

e2eTest("start-training trains on the caller's own dataset only; another's is a 404", async (t) => {
  const alice = await t.newUser();
  const bob = await t.newUser();
  const dataset = await callFunction("generate-training-data", {
    token: alice.token,
    key: t.newKey(),
    body: { name: "QA", task: "question_answering", count: 5 },
  });
  assert.equal(dataset.status, 201);
  const body = { model_name: "m-1", hyperparameters, dataset_id: dataset.body.dataset_id };

  const own = await callFunction("start-training", { token: alice.token, key: t.newKey(), body });
  assert.equal(own.status, 201);
  assert.equal(own.body.dataset_id, dataset.body.dataset_id);
  const [job] = await t.sql`select dataset_id from public.training_jobs where id = ${own.body.job_id}`;
  assert.equal(job!.dataset_id, dataset.body.dataset_id);

  const key = t.newKey();
  const foreign = await callFunction("start-training", { token: bob.token, key, body });
  assert.equal(foreign.status, 404);
  assert.equal(foreign.body.error.code, "NOT_FOUND");
  assert.match(foreign.body.error.message, /^dataset_id: /);
  assert.equal(await countRows(t.sql, "training_jobs", bob.id), 0);
  assert.notEqual((await keyRow(t.sql, key, bob.id))?.status, "processing", "the key must not stay locked");
});

e2eTest("supabase-js functions.invoke with an Idempotency-Key runs once and replays", async (t) => {
  const user = await t.newUser();
  // As a browser app does: the project's anon key, and the signed-in user's access token on each call.
  const supabase = createClient(API_URL, await anonKey(), {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    accessToken: () => Promise.resolve(user.token),
  });
  const key = t.newKey();
  const body = { model_name: "client-model", hyperparameters };

  const first = await supabase.functions.invoke("start-training", {
    body,
    headers: { "Idempotency-Key": key },
  });
  assert.equal(first.error, null);
  assert.equal(first.response?.status, 201);
  assert.equal(first.response?.headers.get("x-idempotency-replay"), "false");
  const retry = await supabase.functions.invoke("start-training", {
    body,
    headers: { "Idempotency-Key": key },
  });
  assert.equal(retry.error, null);
  assert.equal(retry.response?.headers.get("x-idempotency-replay"), "true");
  assert.deepEqual(retry.data, first.data);
  assert.equal(await countRows(t.sql, "training_jobs", user.id), 1);

  const misuse = await supabase.functions.invoke("start-training", {
    body: { ...body, model_name: "other-model" },
    headers: { "Idempotency-Key": key },
  });
  assert.ok(misuse.error instanceof FunctionsHttpError);
  assert.equal(misuse.response?.status, 422);
  assert.equal((await misuse.response!.json()).error.code, "KEY_REUSED_WITH_DIFFERENT_REQUEST");
  assert.equal(await countRows(t.sql, "training_jobs", user.id), 1);
});

e2eTest(
  "supabase-js: concurrent retries of one operation create one document and share its answer",
  async (t) => {
    const user = await t.newUser();
    const supabase = createClient(API_URL, await anonKey(), {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
      accessToken: () => Promise.resolve(user.token),
    });
    const key = t.newKey();
    const body = documentBody();
    const calls = await Promise.all(
      [0, 1, 2].map(() =>
        supabase.functions.invoke("process-document", { body, headers: { "Idempotency-Key": key } })
      ),
    );
    const ok = calls.filter((c) => c.error === null);
    assert.ok(ok.length >= 1);
    for (const c of ok) assert.equal(c.data.document_id, ok[0]!.data.document_id);
    for (const c of calls.filter((c) => c.error !== null)) {
      assert.equal(c.response?.status, 409);
      await c.response?.body?.cancel();
    }
    assert.equal(await countRows(t.sql, "documents", user.id), 1);
  },
);
