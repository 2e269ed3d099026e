/**
 * Deploy shape: every function loads and serves with only its own `deno.json` (as `supabase functions
 * deploy` resolves imports), through its `export default { fetch }`, in a fresh `deno serve` process.
 */

import assert from "node:assert/strict";
import { coldStart, FUNCTION_NAMES } from "../../scripts/bench/cold_start.ts";

for (const name of FUNCTION_NAMES) {
  Deno.test(`deploy: ${name} serves from its own deno.json (deno serve, default export)`, async () => {
    const first = await coldStart(name);
    // the function's own answer, not the runtime's: its JSON error shape for a GET on a POST-only function
    assert.equal(first.status, 405);
    assert.equal(JSON.parse(first.body).error.code, "METHOD_NOT_ALLOWED");
  });
}

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
