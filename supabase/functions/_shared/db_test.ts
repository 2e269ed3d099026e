import assert from "node:assert/strict";
import { createSql } from "./db.ts";
import { preparedStatementsSupported } from "./idempotency/pool.ts";

Deno.test("prepared statements are off on Supavisor's transaction-mode port 6543 and with ?prepare=false", () => {
  assert.equal(preparedStatementsSupported("postgresql://u:p@db.example.supabase.co:5432/postgres"), true);
  assert.equal(
    preparedStatementsSupported("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres"),
    false,
  );
  assert.equal(
    preparedStatementsSupported("postgresql://u:p@aws-0-eu.pooler.supabase.com:5432/postgres"),
    true,
  );
  assert.equal(preparedStatementsSupported("postgresql://u:p@localhost/postgres"), true);
  // any other transaction pooler is marked with postgres.js's own URL option
  assert.equal(preparedStatementsSupported("postgresql://u:p@127.0.0.1:54329/postgres?prepare=false"), false);
  assert.equal(preparedStatementsSupported("postgresql://u:p@127.0.0.1:54329/postgres?prepare=true"), true);
});

Deno.test("createSql without a URL says SUPABASE_DB_URL is missing", () => {
  const saved = Deno.env.get("SUPABASE_DB_URL");
  Deno.env.delete("SUPABASE_DB_URL");
  try {
    assert.throws(() => createSql(), /SUPABASE_DB_URL/);
  } finally {
    if (saved !== undefined) Deno.env.set("SUPABASE_DB_URL", saved);
  }
});
