/**
 * The functions' work against the real database with prepared statements off, as through Supavisor's
 * transaction mode (port 6543): the same queries must work, and store JSON as objects and arrays.
 */

import assert from "node:assert/strict";
import { createSql } from "../../supabase/functions/_shared/db.ts";
import { generateTrainingData } from "../../supabase/functions/generate-training-data/dataset.ts";
import { parseGenerateTrainingDataRequest } from "../../supabase/functions/generate-training-data/validate.ts";
import { processDocument } from "../../supabase/functions/process-document/process.ts";
import { parseProcessDocumentRequest } from "../../supabase/functions/process-document/validate.ts";
import { checkDataset, queueTrainingJob } from "../../supabase/functions/start-training/train.ts";
import type { Tx } from "../../supabase/functions/_shared/db.ts";
import { parseStartTrainingRequest } from "../../supabase/functions/start-training/validate.ts";
import { DB_URL, e2eTest } from "./support.ts";
import type { StartTrainingInput } from "../../supabase/functions/start-training/validate.ts";

/** start-training's database work without a trainer: the dataset check, then the job row. */
async function startTraining(tx: Tx, userId: string | null, input: StartTrainingInput) {
  await checkDataset(tx, userId, input);
  return await queueTrainingJob(tx, userId, input, null);
}

e2eTest("the work runs unprepared (transaction pooler mode) and stores real JSON", async (t) => {
  const user = await t.newUser();
  const sql = createSql({ url: DB_URL, prepare: false, max: 1 });
  try {
    const doc = await sql.begin((tx) =>
      processDocument(
        tx,
        user.id,
        parseProcessDocumentRequest(JSON.stringify({ title: "T", content: "One two. Three." })),
      )
    );
    const data = await sql.begin((tx) =>
      generateTrainingData(
        tx,
        user.id,
        parseGenerateTrainingDataRequest(JSON.stringify({ name: "D", task: "summarization", count: 4 })),
      )
    );
    const job = await sql.begin((tx) =>
      startTraining(
        tx,
        user.id,
        parseStartTrainingRequest(JSON.stringify({
          model_name: "m",
          hyperparameters: { learning_rate: 0.1, epochs: 1, batch_size: 1 },
          dataset_id: data.dataset_id,
        })),
      )
    );
    const [row] = await t.sql`
      select jsonb_typeof(j.result) as result, j.operations,
             (select jsonb_typeof(examples) from public.training_datasets where id = ${data.dataset_id}) as examples,
             (select jsonb_typeof(label_counts) from public.training_dataset_stats where dataset_id = ${data.dataset_id})
               as labels,
             (select jsonb_typeof(hyperparameters) from public.training_jobs where id = ${job.job_id}) as hp
      from public.document_processing_jobs j where j.id = ${doc.job_id}`;
    assert.deepEqual(
      { ...row },
      {
        result: "object",
        operations: ["summary", "keywords", "statistics"],
        examples: "array",
        labels: "object",
        hp: "object",
      },
    );
  } finally {
    await sql.end();
  }
});

e2eTest("a dataset of another user, or a service dataset, is not found for a user", async (t) => {
  const alice = await t.newUser();
  const bob = await t.newUser();
  const sql = createSql({ url: DB_URL, max: 1 });
  try {
    const input = parseGenerateTrainingDataRequest(
      JSON.stringify({ name: "D", task: "summarization", count: 1 }),
    );
    const bobs = await sql.begin((tx) => generateTrainingData(tx, bob.id, input));
    const service = await sql.begin((tx) => generateTrainingData(tx, null, input));
    t.defer(() => t.sql`delete from public.training_datasets where id = ${service.dataset_id}`);
    const hyperparameters = { learning_rate: 0.1, epochs: 1, batch_size: 1 };
    for (const datasetId of [bobs.dataset_id, service.dataset_id, crypto.randomUUID()]) {
      const input = parseStartTrainingRequest(
        JSON.stringify({ model_name: "m", hyperparameters, dataset_id: datasetId }),
      );
      await assert.rejects(
        sql.begin((tx) => startTraining(tx, alice.id, input)),
        (e: { code?: string }) => e.code === "NOT_FOUND",
      );
    }
    // the service trains on a service dataset
    const job = await sql.begin((tx) =>
      startTraining(
        tx,
        null,
        parseStartTrainingRequest(
          JSON.stringify({ model_name: "m", hyperparameters, dataset_id: service.dataset_id }),
        ),
      )
    );
    t.defer(() => t.sql`delete from public.training_jobs where id = ${job.job_id}`);
    assert.equal(job.dataset_id, service.dataset_id);
  } finally {
    await sql.end();
  }
});
