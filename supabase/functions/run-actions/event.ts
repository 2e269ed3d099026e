/** Reading a Supabase Database Webhook payload: `{ type, table, schema, record, old_record }`. */

import { FunctionError } from "../_shared/http.ts";
import { invalidField, type JsonObject, parseJsonObject, requireString } from "../_shared/validate.ts";

/** One database event as a Database Webhook delivers it. */
export interface WebhookEvent {
  /** `INSERT`, `UPDATE` or `DELETE`. */
  type: "INSERT" | "UPDATE" | "DELETE";
  /** The table's schema, e.g. `public`. */
  schema: string;
  /** The table, e.g. `training_datasets`. */
  table: string;
  /** The new row (`null` on DELETE). */
  record: JsonObject | null;
  /** The old row (`null` on INSERT). */
  oldRecord: JsonObject | null;
}

const TYPES = ["INSERT", "UPDATE", "DELETE"] as const;
const IDENTIFIER = {
  regex: /^[A-Za-z_][A-Za-z0-9_]{0,62}$/,
  description: "a Postgres identifier",
};

/**
 * Parses and checks a webhook body.
 *
 * @throws {FunctionError} 400 `INVALID_REQUEST` naming the field.
 */
export function parseWebhookEvent(text: string): WebhookEvent {
  const body = parseJsonObject(text);
  const type = requireString(body, "type");
  if (!(TYPES as readonly string[]).includes(type)) {
    throw invalidField(
      "type",
      `must be one of ${TYPES.join(", ")}, got ${JSON.stringify(type)}`,
    );
  }
  const event: WebhookEvent = {
    type: type as WebhookEvent["type"],
    schema: requireString(body, "schema", { pattern: IDENTIFIER }),
    table: requireString(body, "table", { pattern: IDENTIFIER }),
    record: optionalRow(body, "record"),
    oldRecord: optionalRow(body, "old_record"),
  };
  if (event.type !== "DELETE" && event.record === null) {
    throw invalidField("record", `is required on ${type}`);
  }
  if (event.type !== "INSERT" && event.oldRecord === null) {
    throw invalidField("old_record", `is required on ${type}`);
  }
  return event;
}

function optionalRow(body: JsonObject, field: string): JsonObject | null {
  const value = body[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new FunctionError(
      "INVALID_REQUEST",
      `${field}: must be an object or null`,
    );
  }
  return value as JsonObject;
}
