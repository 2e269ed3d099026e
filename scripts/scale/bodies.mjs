// Writes N response bodies as the store keeps them (brotli at quality 5 of a ~500-byte JSON document, with the
// size hint, as the codec, supabase/functions/_shared/idempotency/_codec.ts, stores bodies past
// compressThresholdBytes and up to 64 KiB), one bytea hex literal a line, its backslash doubled for COPY.
// Each body differs (ids, numbers, words), so no two rows share bytes: sizes are as real traffic makes them.
import { brotliCompressSync, constants } from "node:zlib";
import { randomUUID } from "node:crypto";

const n = Number(process.argv[2] ?? 1000);
const words = [
  "revenue",
  "growth",
  "region",
  "forecast",
  "churn",
  "margin",
  "pipeline",
  "audit",
  "invoice",
  "contract",
  "summary",
  "renewal",
  "budget",
  "quarter",
  "supplier",
  "logistics",
  "compliance",
  "hiring",
];
const pick = () => words[Math.floor(Math.random() * words.length)];
let raw = 0, stored = 0;
for (let i = 0; i < n; i++) {
  const doc = {
    job: {
      id: randomUUID(),
      document_id: randomUUID(),
      status: "completed",
      created_at: new Date().toISOString(),
    },
    result: {
      summary: `The ${pick()} report covers ${pick()} and ${pick()} for ${pick()}; ${
        Math.floor(Math.random() * 900 + 100)
      } items were reviewed.`,
      keywords: [pick(), pick(), pick(), pick(), pick()],
      statistics: {
        words: Math.floor(Math.random() * 9000),
        sentences: Math.floor(Math.random() * 400),
        avg_word_length: +(Math.random() * 4 + 3).toFixed(2),
        reading_minutes: +(Math.random() * 30).toFixed(1),
      },
    },
    content_sha256: randomUUID().replaceAll("-", "") + randomUUID().replaceAll("-", ""),
  };
  const json = Buffer.from(JSON.stringify(doc));
  const br = brotliCompressSync(json, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_SIZE_HINT]: json.length },
  });
  raw += json.length;
  stored += br.length;
  process.stdout.write(`\\\\x${br.toString("hex")}\n`);
}
process.stderr.write(
  `bodies: ${n}, JSON ${Math.round(raw / n)} bytes on average, brotli ${Math.round(stored / n)}\n`,
);
