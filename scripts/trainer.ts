/**
 * A simulated external model trainer, the "outside world" start-training calls through a resumable step. It
 * counts every call and deduplicates by `Idempotency-Key` as a real provider's API does, so tests can count
 * both the calls made and the jobs they effectively started.
 *
 *   POST <base>/jobs   (Idempotency-Key: <key>) → 201 { id }; the same key again → 200 with the same id
 *   GET  <base>/stats[?key=<key>]                 → { calls, jobs } (for one key, or in total)
 *
 * Served by the local gateway under /trainer (scripts/gateway.ts), and standalone by the crash harness:
 *   PORT=0 deno run --allow-net --allow-env scripts/trainer.ts    (prints `listening <port>`)
 */

/** One simulated trainer: its counts live in this process. */
export function createTrainerHandler(): (req: Request) => Promise<Response> {
  const calls = new Map<string, number>();
  const jobs = new Map<string, string>();
  return async (req) => {
    const url = new URL(req.url);
    if (req.method === "POST" && url.pathname.endsWith("/jobs")) {
      await req.body?.cancel();
      const key = req.headers.get("idempotency-key");
      if (!key) return Response.json({ error: "Idempotency-Key required" }, { status: 400 });
      calls.set(key, (calls.get(key) ?? 0) + 1);
      const existing = jobs.get(key);
      if (existing) return Response.json({ id: existing }, { status: 200 });
      const id = `trn_${crypto.randomUUID()}`;
      jobs.set(key, id);
      return Response.json({ id }, { status: 201 });
    }
    if (req.method === "GET" && url.pathname.endsWith("/stats")) {
      const key = url.searchParams.get("key");
      if (key !== null) return Response.json({ calls: calls.get(key) ?? 0, jobs: jobs.has(key) ? 1 : 0 });
      let total = 0;
      for (const n of calls.values()) total += n;
      return Response.json({ calls: total, jobs: jobs.size });
    }
    return Response.json({ error: "not found" }, { status: 404 });
  };
}

if (import.meta.main) {
  Deno.serve({
    hostname: "127.0.0.1",
    port: Number(Deno.env.get("PORT") ?? "0"),
    onListen: ({ port }) => console.log(`listening ${port}`),
  }, createTrainerHandler());
}
