/**
 * A real browser: headless Chromium opens a page served from another origin than the gateway; the page
 * calls process-document twice with one key through the client helper (bundled for the browser) and
 * reads `X-Idempotency-Replay`. Proves the CORS preflight, the allowed request headers, the exposed
 * response headers and the replay, as a browser enforces them. The screenshot and the DOM are kept in
 * `.local/test-output/browser/`.
 */
import assert from "node:assert/strict";
import { API_URL, countRows, documentBody, e2eTest } from "../e2e/support.ts";
import { launchChromium } from "./chromium.ts";

const ROOT = new URL("../../", import.meta.url);
const OUTPUT = new URL(".local/test-output/browser/", ROOT).pathname;

/** The client helper as one ES module for the browser, by `deno bundle`. */
async function bundleClient(): Promise<string> {
  const out = `${await Deno.makeTempDir({ prefix: "client-bundle-" })}/client.js`;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "browser", "--format", "esm", "-o", out, "client/mod.ts"],
    cwd: ROOT.pathname,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`deno bundle failed: ${new TextDecoder().decode(stderr)}`);
  const js = await Deno.readTextFile(out);
  await Deno.remove(out);
  return js;
}

/** Serves the page and the bundle on 127.0.0.1:`BROWSER_PAGE_PORT` (default: any free port). */
function servePage(html: string, js: string) {
  return Deno.serve(
    { hostname: "127.0.0.1", port: Number(Deno.env.get("BROWSER_PAGE_PORT") ?? 0), onListen: () => {} },
    (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/client.js") return new Response(js, { headers: { "content-type": "text/javascript" } });
      if (path === "/") {
        return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
      }
      return new Response("not found", { status: 404 });
    },
  );
}

e2eTest(
  "browser: Chromium on another origin, two calls with one key: preflight, exposed headers, replay",
  async (ctx) => {
    const user = await ctx.newUser();
    const page = servePage(
      await Deno.readTextFile(new URL("page.html", import.meta.url)),
      await bundleClient(),
    );
    ctx.defer(() => page.shutdown());
    const pageOrigin = `http://127.0.0.1:${page.addr.port}`;
    assert.notEqual(pageOrigin, new URL(API_URL).origin, "the page and the gateway are different origins");

    const browser = await launchChromium();
    ctx.defer(() => browser.close());
    await browser.send("Network.enable");
    await browser.send("Page.enable");
    await browser.send("Page.navigate", { url: `${pageOrigin}/` });
    await waitFor(() => browser.events.some((e) => e.method === "Page.loadEventFired"), "the page load");
    await waitFor(
      async () => (await evaluate(browser, "document.getElementById('out').textContent")) === "ready",
      "the page script",
    );

    const args = JSON.stringify({ apiUrl: API_URL, token: user.token, body: documentBody() });
    const result = await evaluate(browser, `runScenario(${args})`);

    await Deno.mkdir(OUTPUT, { recursive: true });
    const { data } = await browser.send("Page.captureScreenshot", { format: "png" });
    await Deno.writeFile(`${OUTPUT}/replay.png`, Uint8Array.from(atob(data), (c) => c.charCodeAt(0)));
    await Deno.writeTextFile(
      `${OUTPUT}/replay.html`,
      await evaluate(browser, "document.documentElement.outerHTML"),
    );
    await Deno.writeTextFile(`${OUTPUT}/result.json`, JSON.stringify(result, null, 2));

    // the replay, through the helper, as the page saw it
    assert.equal(result.origin, pageOrigin);
    assert.deepEqual(result.first, {
      ...result.first,
      status: 201,
      replayed: false,
      attempts: 1,
      error: null,
    });
    assert.deepEqual(result.second, { ...result.first, replayed: true });
    assert.match(result.first.document_id, /^[0-9a-f-]{36}$/);
    // a plain fetch reads the exposed header, and not one that is not exposed although the server sent it
    assert.equal(result.raw.status, 201);
    assert.equal(result.raw.replayHeader, "true");
    assert.equal(result.raw.unexposedDate, null);

    // the preflight, as Chromium sent and received it
    const functionUrl = `${API_URL}/functions/v1/process-document`;
    const preflights = browser.events.filter((e) =>
      e.method === "Network.requestWillBeSent" && e.params.request.method === "OPTIONS" &&
      e.params.request.url === functionUrl
    );
    assert.ok(preflights.length >= 1, "Chromium sent a CORS preflight before the POST");
    const asked = lower(preflights[0]!.params.request.headers)["access-control-request-headers"] ?? "";
    for (const name of ["authorization", "content-type", "idempotency-key"]) {
      assert.ok(
        asked.split(",").map((s: string) => s.trim()).includes(name),
        `the preflight asked for ${name}`,
      );
    }
    const preflightResponse = browser.events.find((e) =>
      e.method === "Network.responseReceived" && e.params.requestId === preflights[0]!.params.requestId &&
      e.params.type === "Preflight"
    );
    assert.ok(preflightResponse, "the preflight's answer was seen");
    assert.equal(preflightResponse.params.response.status, 204);
    const allowed = lower(preflightResponse.params.response.headers)["access-control-allow-headers"];
    assert.match(allowed ?? "", /idempotency-key/);

    const posts = browser.events.filter((e) =>
      e.method === "Network.responseReceived" && e.params.response.url === functionUrl &&
      e.params.type !== "Preflight"
    );
    assert.equal(posts.length, 3, "three POSTs answered");
    for (const post of posts) {
      const headers = lower(post.params.response.headers);
      assert.match(headers["access-control-expose-headers"] ?? "", /x-idempotency-replay/);
      assert.ok(headers["date"], "the server did send Date");
    }
    assert.equal(await countRows(ctx.sql, "documents", user.id), 1, "the work ran once for three calls");
  },
);

/** `Runtime.evaluate` of `expression`, awaited, by value; a page exception fails the test. */
async function evaluate(
  browser: Awaited<ReturnType<typeof launchChromium>>,
  expression: string,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const reply = await browser.send("Runtime.evaluate", {
    expression,
    awaitPromise: true,
    returnByValue: true,
  });
  if (reply.exceptionDetails) {
    throw new Error(
      `the page threw: ${reply.exceptionDetails.exception?.description ?? reply.exceptionDetails.text}`,
    );
  }
  return reply.result.value;
}

async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function lower(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
}
