/**
 * Deploy shape: every function loads and serves with only its own `deno.json` (as `supabase functions
 * deploy` resolves imports), through its `export default { fetch }`, in a fresh `deno serve` process.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { coldStart, FUNCTION_NAMES } from "../../scripts/bench/cold_start.ts";
import { DB_URL } from "../e2e/support.ts";
import { signJwt } from "../support/jwt.ts";

for (const name of FUNCTION_NAMES) {
  Deno.test(`deploy: ${name} serves from its own deno.json (deno serve, default export)`, async () => {
    const first = await coldStart(name);
    // the function's own answer, not the runtime's: its JSON error shape for a GET on a POST-only function
    assert.equal(first.status, 405);
    assert.equal(JSON.parse(first.body).error.code, "METHOD_NOT_ALLOWED");
  });
}

Deno.test("deploy: process-document stores its answer as zdict and replays it, each in a fresh process", async () => {
  // the dictionary's deflater is a dynamic npm import: it must resolve from the function's own deno.json
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const [user] = await sql<{ id: string }[]>`
    insert into auth.users (email) values (${`deploy-${crypto.randomUUID()}@test.local`}) returning id`;
  try {
    const key = `deploy-${crypto.randomUUID()}`;
    const probe = {
      method: "POST",
      headers: {
        authorization: `Bearer ${await signJwt({ sub: user!.id, role: "authenticated" })}`,
        "content-type": "application/json",
        "idempotency-key": key,
      },
      body: JSON.stringify({ title: "Deploy", content: "Freight rose in every region. Tariffs held." }),
    };
    const env = { SUPABASE_DB_URL: DB_URL };
    const first = await coldStart("process-document", env, probe);
    assert.equal(first.status, 201, first.body);
    const [row] =
      await sql`select response_encoding from public.idempotency_keys where idempotency_key = ${key}`;
    assert.equal(row!.response_encoding, "zdict");
    const again = await coldStart("process-document", env, probe);
    assert.equal(again.status, 201);
    assert.equal(again.body, first.body, "the second process replays the first's answer");
    const [docs] = await sql<{ count: number }[]>`
      select count(*)::int as count from public.documents where user_id = ${user!.id}`;
    assert.equal(docs!.count, 1, "the work ran once");
  } finally {
    await sql`delete from auth.users where id = ${user!.id}`;
    await sql.end();
  }
});

Deno.test("deploy: no function loads node-redis (only a function that imports the Redis backend does)", async () => {
  for (const name of FUNCTION_NAMES) {
    const dir = new URL(`../../supabase/functions/${name}/`, import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--config", `${dir}deno.json`, `${dir}index.ts`],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(out.success, `deno info ${name}`);
    const graph = new TextDecoder().decode(out.stdout);
    assert.ok(
      graph.includes("npm:/postgres@3.4.9") || graph.includes("postgres@3.4.9"),
      `${name} uses postgres`,
    );
    assert.ok(!graph.includes("redis@"), `${name} must not load redis`);
  }
});
