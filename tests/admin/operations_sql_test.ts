/**
 * docs/operations.md stays in step with the schema: every ```sql block of it runs against the real
 * database as the SQL editor runs it (the postgres role), in a transaction that is rolled back, so the
 * cleanup and admin examples change nothing.
 */
import assert from "node:assert/strict";
import postgres from "postgres";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";

/** Raised to roll a block's transaction back once it ran. */
class RolledBack extends Error {}

Deno.test("docs/operations.md: every SQL block runs against the current schema", async () => {
  const page = await Deno.readTextFile(new URL("../../docs/operations.md", import.meta.url));
  const blocks = [...page.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 12, `found ${blocks.length} SQL blocks`);
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    for (const block of blocks) {
      await assert.rejects(
        sql.begin(async (tx) => {
          for (
            const statement of block.split(/;\s*(?:\n|$)/).map((s) => s.replace(/^\s*--.*$/gm, "").trim())
          ) {
            if (statement !== "") await tx.unsafe(statement);
          }
          throw new RolledBack();
        }),
        (error: unknown) => {
          if (error instanceof RolledBack) return true;
          throw new Error(`this block of docs/operations.md fails:\n${block}\n${error}`);
        },
      );
    }
  } finally {
    await sql.end();
  }
});
