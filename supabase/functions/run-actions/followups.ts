/**
 * The follow-up actions of each database event, and their work. Each action is identified by the event
 * (schema, table, type and row id: the signal) plus what it does, so a redelivered event maps to the same
 * action keys and each action runs once.
 */

// deno-lint-ignore no-import-prefix -- a full specifier, resolved the same from any deno.json
import type postgres from "npm:postgres@3.4.9";
import type { ActionIdentity } from "../_shared/actions.ts";
import { invalidField } from "../_shared/validate.ts";
import type { WebhookEvent } from "./event.ts";

/** One follow-up: its identity and the work it does inside the transaction that records it. */
export interface FollowUp {
  /** Signal, action type, target, params. */
  action: ActionIdentity & { actionType: string };
  /** The side effect; `previous` holds the results of the follow-ups before it, by action type. */
  run(
    tx: postgres.TransactionSql,
    previous: Record<string, unknown>,
  ): Promise<unknown>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** The job a new dataset starts with. */
const BASELINE_HYPERPARAMETERS = {
  learning_rate: 0.0001,
  epochs: 3,
  batch_size: 16,
};

/**
 * The follow-ups of `event`, in the order they run; none for events this function does not handle.
 *
 * @throws {FunctionError} 400 when a handled event's row lacks what its follow-ups need.
 */
export function followUpsFor(event: WebhookEvent): FollowUp[] {
  if (
    event.schema === "public" && event.table === "training_datasets" &&
    event.type === "INSERT"
  ) {
    return datasetInserted(event);
  }
  return [];
}

/** A new dataset: queue a baseline training job on it, then tell its owner. */
function datasetInserted(event: WebhookEvent): FollowUp[] {
  const row = event.record ?? {};
  const id = uuid(row.id, "record.id");
  const userId = row.user_id === null || row.user_id === undefined
    ? null
    : uuid(row.user_id, "record.user_id");
  const name = typeof row.name === "string" ? row.name : "dataset";
  const task = typeof row.task === "string" ? row.task : "classification";
  const signalId = `${event.schema}.${event.table}/${event.type}/${id}`;
  const modelName = `baseline-${task.replaceAll("_", "-")}`;
  return [
    {
      action: {
        signalId,
        actionType: "start_training_job",
        target: "training_jobs",
        params: {
          dataset_id: id,
          model_name: modelName,
          hyperparameters: BASELINE_HYPERPARAMETERS,
        },
      },
      async run(tx) {
        // the dataset may be gone by the time the event arrives: nothing to train, and nothing to retry
        const [dataset] = await tx`select 1 from public.training_datasets where id = ${id} for share`;
        if (!dataset) return { skipped: "the dataset no longer exists" };
        const [job] = await tx<{ id: string }[]>`
          insert into public.training_jobs (user_id, model_name, dataset_id, hyperparameters, status)
          values (${userId}, ${modelName}, ${id}, ${tx.json(BASELINE_HYPERPARAMETERS)}, 'queued')
          returning id`;
        return { job_id: job?.id };
      },
    },
    {
      action: {
        signalId,
        actionType: "notify",
        target: "notifications",
        params: { user_id: userId, kind: "training_queued", dataset_id: id },
      },
      async run(tx, previous) {
        const job = previous.start_training_job as {
          job_id?: string;
          skipped?: string;
        } | undefined;
        const message = job?.job_id
          ? `Dataset "${name}" is ready: baseline training job ${job.job_id} is queued.`
          : `Dataset "${name}" was removed before training could start.`;
        const [note] = await tx<{ id: string }[]>`
          insert into public.notifications (user_id, kind, message, subject, action_key)
          values (${userId}, 'training_queued', ${message.slice(0, 1000)},
            ${tx.json({ table: event.table, id, job_id: job?.job_id ?? null })}, ${signalId})
          returning id`;
        return { notification_id: note?.id };
      },
    },
  ];
}

function uuid(value: unknown, field: string): string {
  if (typeof value !== "string" || !UUID.test(value)) {
    throw invalidField(field, "must be a uuid");
  }
  return value;
}
