/**
 * A validly signed token whose user was deleted from auth.users (docs/faults.md): every function answers
 * 401 `USER_NOT_FOUND` without `Retry-After`, with or without an idempotency key, and writes nothing.
 * Before the fix a keyed call got 503 `STORE_UNAVAILABLE` (retried for ever) and an unkeyed one 500.
 */

import assert from "node:assert/strict";
import { newUser, psql } from "./support.ts";

const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";

const CALLS: Record<string, unknown> = {
  "process-document": { title: "Gone", content: "Revenue grew. Costs fell." },
  "start-training": {
    model_name: "gone-model",
    hyperparameters: { learning_rate: 0.0003, epochs: 3, batch_size: 16 },
  },
  "generate-training-data": { name: "gone", task: "summarization", count: 3 },
};

const OWNED_TABLES = [
  "idempotency_keys",
  "documents",
  "document_processing_jobs",
  "training_datasets",
  "training_dataset_stats",
  "training_jobs",
];

Deno.test("a deleted user's valid token: 401 USER_NOT_FOUND in every function, keyed or not; nothing written", async () => {
  const user = await newUser();
  await psql(`delete from auth.users where id = '${user.id}'`);
  for (const [name, body] of Object.entries(CALLS)) {
    for (const key of [`gone-${crypto.randomUUID()}`, null]) {
      const headers: Record<string, string> = {
        authorization: `Bearer ${user.token}`,
        "content-type": "application/json",
      };
      if (key) headers["idempotency-key"] = key;
      const res = await fetch(`${API_URL}/functions/v1/${name}`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
      });
      const answer = await res.json();
      const what = `${name} ${key ? "keyed" : "unkeyed"}`;
      assert.equal(res.status, 401, `${what}: ${JSON.stringify(answer)}`);
      assert.equal(answer.error.code, "USER_NOT_FOUND", what);
      assert.equal(res.headers.get("retry-after"), null, `${what}: a client must not retry`);
    }
  }
  for (const table of OWNED_TABLES) {
    const rows = await psql(`select count(*) from public.${table} where user_id = '${user.id}'`);
    assert.equal(rows, "0", `${table} has rows of the deleted user`);
  }
});
