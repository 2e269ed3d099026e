/** The pure input validator of process-document. */

import {
  optionalInteger,
  optionalStringList,
  parseJsonObject,
  rejectUnknownFields,
  requireString,
} from "../_shared/validate.ts";

/** The operations process-document can run on a document, in the order they run. */
export const OPERATIONS = ["summary", "keywords", "statistics"] as const;

/** One of {@link OPERATIONS}. */
export type Operation = typeof OPERATIONS[number];

/** Most characters of content accepted (about 100 KB of text). */
export const MAX_CONTENT_CHARS = 100_000;

/** A valid process-document request. */
export interface ProcessDocumentInput {
  /** The document's title, 1-500 characters. */
  title: string;
  /** The text to process, 1-100 000 characters. */
  content: string;
  /** The operations to run, distinct, in {@link OPERATIONS} order; default all of them. */
  operations: Operation[];
  /** How many keywords the `keywords` operation returns, 1-50; default 5. */
  maxKeywords: number;
}

/** Parses the request body; throws 400 INVALID_REQUEST naming the first bad field. */
export function parseProcessDocumentRequest(body: string): ProcessDocumentInput {
  const object = parseJsonObject(body);
  rejectUnknownFields(object, ["title", "content", "operations", "max_keywords"]);
  const title = requireString(object, "title", { max: 500 });
  const content = requireString(object, "content", { max: MAX_CONTENT_CHARS });
  const asked = optionalStringList(object, "operations", OPERATIONS, { choices: OPERATIONS });
  const maxKeywords = optionalInteger(object, "max_keywords", 5, { min: 1, max: 50 });
  return {
    title: title.trim(),
    content,
    operations: OPERATIONS.filter((op) => asked.includes(op)),
    maxKeywords,
  };
}
