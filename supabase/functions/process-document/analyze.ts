/** The pure text analysis process-document runs: word count, digest, summary, keywords, statistics. */

import { createHash } from "node:crypto";

/** Words: runs of letters, digits and apostrophes (Unicode-aware). */
const WORD = /[\p{L}\p{N}][\p{L}\p{N}'’]*/gu;

/** Common English words that make poor keywords. */
const STOPWORDS = new Set(
  ("a an and are as at be been but by can could did do does for from had has have he her his how i if in " +
    "into is it its it's just may me more most my no not of on or our out she so some such than that the " +
    "their them then there these they this those to too up us was we were what when where which while who " +
    "why will with would you your")
    .split(" "),
);

/** The words of `text`, lower-cased. */
export function words(text: string): string[] {
  return (text.match(WORD) ?? []).map((w) => w.toLowerCase());
}

/** How many words `text` has. */
export function wordCount(text: string): number {
  return (text.match(WORD) ?? []).length;
}

/**
 * Hex SHA-256 of the UTF-8 bytes of `text`. node:crypto hashes in place; WebCrypto's digest hops to a thread
 * pool and back, which costs more than hashing a document.
 */
export function sha256Hex(text: string): Promise<string> {
  return Promise.resolve(createHash("sha256").update(text, "utf8").digest("hex"));
}

/** The sentences of `text`: split after `.`, `!` or `?` followed by white space, blanks dropped. */
export function sentences(text: string): string[] {
  return text.split(/(?<=[.!?])\s+/u).map((s) => s.trim().replace(/\s+/gu, " ")).filter((s) => s !== "");
}

/** The first sentence of `text`, at most `maxChars` long (cut at a word with `…`). */
export function summarize(text: string, maxChars = 280): string {
  const first = sentences(text)[0] ?? "";
  if (first.length <= maxChars) return first;
  const cut = first.slice(0, maxChars - 1);
  const space = cut.lastIndexOf(" ");
  return `${space > 0 ? cut.slice(0, space) : cut}…`;
}

/** A keyword and how often it occurs. */
export interface Keyword {
  /** The word, lower-cased. */
  word: string;
  /** Its occurrences in the text. */
  count: number;
}

/**
 * The `limit` most frequent words of `text` that are not stop words and have at least 3 characters; ties are
 * broken by first occurrence, so the result is deterministic.
 */
export function topKeywords(text: string, limit: number): Keyword[] {
  const counts = new Map<string, number>();
  for (const word of words(text)) {
    if (word.length < 3 || STOPWORDS.has(word) || /^\p{N}+$/u.test(word)) continue;
    counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  // Map iteration follows first insertion, and Array.prototype.sort is stable.
  return [...counts].map(([word, count]) => ({ word, count }))
    .sort((a, b) => b.count - a.count)
    .slice(0, limit);
}

/** Figures of a text. */
export interface TextStatistics {
  /** Characters (UTF-16 code units, as JavaScript counts them). */
  characters: number;
  /** Words, as {@link wordCount} counts them. */
  words: number;
  /** Sentences, as {@link sentences} splits them. */
  sentences: number;
  /** Mean characters per word, two decimals; 0 without words. */
  avgWordLength: number;
}

/** The figures of `text`. */
export function statistics(text: string): TextStatistics {
  const all = words(text);
  const letters = all.reduce((sum, w) => sum + w.length, 0);
  return {
    characters: text.length,
    words: all.length,
    sentences: sentences(text).length,
    avgWordLength: all.length === 0 ? 0 : Math.round((letters / all.length) * 100) / 100,
  };
}
