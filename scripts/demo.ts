/**
 * The product in one minute: requests against the running local stack, over real HTTP, printing what
 * happened. Run by scripts/demo.sh after the stack is up.
 */
import postgres from "postgres";
import { signJwt } from "../tests/support/jwt.ts";

const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";
const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const FUNCTION_URL = `${API_URL}/functions/v1/process-document`;

const sql = postgres(DB_URL, { max: 2, onnotice: () => {} });

/** A demo user in auth.users, created once and reused. */
async function demoUser(email: string): Promise<{ id: string; token: string }> {
  const [row] = await sql<{ id: string }[]>`
    insert into auth.users (email) values (${email})
    on conflict (email) do update set updated_at = now()
    returning id`;
  return { id: row!.id, token: await signJwt({ sub: row!.id, role: "authenticated", email }) };
}

async function post(token: string, key: string, payload: unknown) {
  const res = await fetch(FUNCTION_URL, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify(payload),
  });
  const body = await res.json();
  return { status: res.status, replay: res.headers.get("x-idempotency-replay") ?? "-", body };
}

async function documentCount(userId: string): Promise<number> {
  const [row] = await sql<
    { n: number }[]
  >`select count(*)::int as n from public.documents where user_id = ${userId}`;
  return row!.n;
}

function line(step: string, r: { status: number; replay: string; body: unknown }, rows: number) {
  const detail = JSON.stringify(r.body).slice(0, 90);
  console.log(
    `${step.padEnd(34)} ${String(r.status).padEnd(4)} replay=${r.replay.padEnd(5)} rows=${rows}  ${detail}`,
  );
}

async function main() {
  const run = crypto.randomUUID().slice(0, 8);
  const alice = await demoUser("alice@demo.local");
  const bob = await demoUser("bob@demo.local");
  const doc = { title: "Quarterly report", content: "Revenue grew. Costs fell. Margins improved." };
  const key = `demo-${run}`;

  console.log(`POST ${FUNCTION_URL}  (Idempotency-Key: ${key})\n`);
  console.log(`${"step".padEnd(34)} http replay       documents  body`);
  const before = await documentCount(alice.id);
  line(
    "1. first request (alice)",
    await post(alice.token, key, doc),
    (await documentCount(alice.id)) - before,
  );
  line(
    "2. network retry, same key",
    await post(alice.token, key, doc),
    (await documentCount(alice.id)) - before,
  );

  const burstKey = `demo-burst-${run}`;
  const burst = await Promise.all(Array.from({ length: 25 }, () => post(alice.token, burstKey, doc)));
  const tally = burst.reduce<Record<string, number>>((t, r) => {
    const k = `${r.status}${r.replay === "true" ? " replay" : ""}`;
    t[k] = (t[k] ?? 0) + 1;
    return t;
  }, {});
  console.log(
    `${"3. 25 concurrent duplicates".padEnd(34)} ${JSON.stringify(tally)}  documents=${
      (await documentCount(alice.id)) - before
    } (1 from step 1, 1 from the burst)`,
  );
  line("4. same key, other payload", await post(alice.token, key, { ...doc, title: "Changed" }), 0);
  const bobBefore = await documentCount(bob.id);
  line(
    "5. bob, same key as alice",
    await post(bob.token, key, doc),
    (await documentCount(bob.id)) - bobBefore,
  );

  console.log("\nselect * from v_idempotency_stats;");
  console.table(
    await sql`select function_name, total::int, processing::int, completed::int, failed::int,
      replays::int, in_flight::int, stuck::int, expired_pending_cleanup::int as expired,
      median_processing_ms::float8 as median_ms, p95_processing_ms::float8 as p95_ms
      from public.v_idempotency_stats order by function_name`,
  );
}

try {
  await main();
} finally {
  await sql.end();
}
