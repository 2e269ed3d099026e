/** The work of process-document: analyse the text, then store the document and its job in one transaction. */

import { jsonb, type Tx } from "../_shared/db.ts";
import { sha256Hex, statistics, summarize, topKeywords, wordCount } from "./analyze.ts";
import type { ProcessDocumentInput } from "./validate.ts";

/** The output of each operation that ran (absent when it was not asked for). */
export interface OperationResults {
  /** The first sentence. */
  summary?: string;
  /** The most frequent non-stop words. */
  keywords?: { word: string; count: number }[];
  /** Figures of the text. */
  statistics?: { characters: number; words: number; sentences: number; avg_word_length: number };
}

/** What process-document answers with (201). */
export interface ProcessDocumentResult {
  document_id: string;
  job_id: string;
  status: "completed";
  title: string;
  word_count: number;
  content_sha256: string;
  operations: string[];
  result: OperationResults;
}

/** Runs the asked operations on the content (pure). */
export function runOperations(input: ProcessDocumentInput): OperationResults {
  const result: OperationResults = {};
  for (const op of input.operations) {
    if (op === "summary") result.summary = summarize(input.content);
    if (op === "keywords") result.keywords = topKeywords(input.content, input.maxKeywords);
    if (op === "statistics") {
      const s = statistics(input.content);
      result.statistics = {
        characters: s.characters,
        words: s.words,
        sentences: s.sentences,
        avg_word_length: s.avgWordLength,
      };
    }
  }
  return result;
}

/**
 * Inserts the document and its completed processing job for `userId` (null: a service call) through `tx`,
 * so they commit together (with the stored answer, under the idempotency wrapper).
 */
export async function processDocument(
  tx: Tx,
  userId: string | null,
  input: ProcessDocumentInput,
): Promise<ProcessDocumentResult> {
  const digest = await sha256Hex(input.content);
  const words = wordCount(input.content);
  const result = runOperations(input);
  const [document] = await tx<{ id: string }[]>`
    insert into public.documents (user_id, title, content, content_sha256, word_count)
    values (${userId}, ${input.title}, ${input.content}, ${digest}, ${words})
    returning id`;
  const documentId = document!.id;
  const [job] = await tx<{ id: string }[]>`
    insert into public.document_processing_jobs (document_id, user_id, status, operations, result)
    values (${documentId}, ${userId}, 'completed', ${input.operations}::text[], ${jsonb(tx, result)})
    returning id`;
  return {
    document_id: documentId,
    job_id: job!.id,
    status: "completed",
    title: input.title,
    word_count: words,
    content_sha256: digest,
    operations: input.operations,
    result,
  };
}
