/** The gateway process itself: it starts on $PORT, serves, and stops cleanly on SIGTERM and SIGINT. */

import assert from "node:assert/strict";
import { DB_URL } from "./support.ts";

/** A free loopback port (bound, then released). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Starts a second gateway on a free port and waits until it prints that it listens. */
async function startGateway(): Promise<{ child: Deno.ChildProcess; url: string; output: Promise<string> }> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", new URL("../../scripts/gateway.ts", import.meta.url).pathname],
    env: {
      PORT: String(port),
      SUPABASE_DB_URL: DB_URL,
      SUPABASE_JWT_SECRET: "super-secret-jwt-token-with-at-least-32-characters-long",
    },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("functions gateway on")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  const output = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return seen;
      seen += value;
    }
  })();
  return { child, url: `http://127.0.0.1:${port}`, output };
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`the gateway serves on $PORT and exits 0 on ${signal}`, async () => {
    const { child, url, output } = await startGateway();
    try {
      const res = await fetch(`${url}/health`);
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, "ok");
    } finally {
      child.kill(signal);
    }
    const status = await child.status;
    assert.equal(status.code, 0);
    assert.match(await output, new RegExp(`${signal}: finishing in-flight requests`));
    await assert.rejects(fetch(`${url}/health`), "the port still answers after the gateway stopped");
  });
}
