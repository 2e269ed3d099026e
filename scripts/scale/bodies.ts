// Writes N response bodies as the store keeps them, one bytea hex literal a line (its backslash doubled for
// COPY): process-document's answers, built by its own code (runOperations, the document's SHA-256, two
// UUIDs) from generated documents, then encoded by the codec with its defaults (supabase/functions/_shared/
// idempotency/_codec.ts). With DICTIONARY=none the codec has no response dictionary (brotli, `br`), else
// process-document's own (`zdict`). Each body differs (ids, hash, title, text), so no two rows share bytes.
//   deno run -A scripts/scale/bodies.ts 1000 > bodies.txt     (the encoding and sizes go to stderr)
// KEYWORDS (default 2) sets how many keywords each answer lists, to see larger answers.
import { encodeBody } from "../../supabase/functions/_shared/idempotency/_codec.ts";
import { DEFAULT_OPTIONS } from "../../supabase/functions/_shared/idempotency/options.ts";
import { checkDictionaries } from "../../supabase/functions/_shared/idempotency/_dictionary.ts";
import { sha256Hex, wordCount } from "../../supabase/functions/process-document/analyze.ts";
import { runOperations } from "../../supabase/functions/process-document/process.ts";
import type { ProcessDocumentInput } from "../../supabase/functions/process-document/validate.ts";
import { RESPONSE_DICTIONARY_V1 } from "../../supabase/functions/process-document/response_dictionary.ts";

const n = Number(Deno.args[0] ?? 1000);
// keywords per answer (process-document's max_keywords): 2 gives ~536 bytes of JSON, the fill's answers
const KEYWORDS = Number(Deno.env.get("KEYWORDS") ?? 2);
const responseDictionaries = Deno.env.get("DICTIONARY") === "none"
  ? []
  : checkDictionaries([RESPONSE_DICTIONARY_V1]);

// words of business documents, most of them not in the dictionary
const WORDS = (
  "account action agenda agreement allocation analysis annual approval asset audit balance bank benefit bid " +
  "board bonus brand budget buyer campaign capacity capital carrier cash catalog channel claim client " +
  "committee compliance contract cost credit customer deadline debt delivery demand deposit design discount " +
  "dividend draft earnings employee equity estimate expense export facility factory finance fleet forecast " +
  "freight fund grant growth hiring import income inventory investor invoice ledger lease liability license " +
  "loan logistics margin market merger milestone mortgage office order outlook partner payment payroll " +
  "pension permit pipeline policy portfolio premium price product profit project proposal purchase quarter " +
  "quota rebate receipt refund region renewal rent report reserve retail revenue review risk royalty salary " +
  "sales schedule security segment shipment shipping stock strategy subsidy summary supplier supply survey " +
  "target tariff tax tender term trade training transfer trend turnover vendor venture volume warehouse " +
  "warranty workforce yield"
).split(" ");
const pick = () => WORDS[Math.floor(Math.random() * WORDS.length)]!;
const sentence = (words: number) => {
  const s = Array.from({ length: words }, pick).join(" ");
  return `${s[0]!.toUpperCase()}${s.slice(1)}.`;
};

let raw = 0, stored = 0, encoding = "";
const lines: string[] = [];
for (let i = 0; i < n; i++) {
  const title = sentence(2 + Math.floor(Math.random() * 3)).slice(0, -1);
  const content = Array.from(
    { length: 20 + Math.floor(Math.random() * 40) },
    () => sentence(5 + Math.floor(Math.random() * 5)),
  ).join(" ");
  const input: ProcessDocumentInput = {
    title,
    content,
    operations: ["summary", "keywords", "statistics"],
    maxKeywords: KEYWORDS,
  };
  const answer = {
    document_id: crypto.randomUUID(),
    job_id: crypto.randomUUID(),
    status: "completed",
    title,
    word_count: wordCount(content),
    content_sha256: await sha256Hex(content),
    operations: input.operations,
    result: runOperations(input),
  };
  const json = new TextEncoder().encode(JSON.stringify(answer));
  const encoded = await encodeBody(json, {
    compressThresholdBytes: DEFAULT_OPTIONS.compressThresholdBytes,
    responseDictionaries,
  });
  raw += json.byteLength;
  stored += encoded.body.byteLength;
  encoding = encoded.encoding;
  lines.push(`\\\\x${Array.from(encoded.body, (b) => b.toString(16).padStart(2, "0")).join("")}`);
}
await Deno.stdout.write(new TextEncoder().encode(lines.join("\n") + "\n"));
console.error(
  `bodies: ${n}, JSON ${Math.round(raw / n)} bytes on average, stored ${
    Math.round(stored / n)
  } (${encoding})`,
);
