/**
 * Headless Chromium (Debian's `chromium`) driven over the DevTools protocol with the runtime's own
 * WebSocket: enough of CDP to open a page, watch its network, evaluate script and take a screenshot.
 */

/** A CDP event: its method and parameters. */
export interface CdpEvent {
  method: string;
  // deno-lint-ignore no-explicit-any
  params: any;
}

/** One page of a running Chromium. */
export interface ChromiumPage {
  /** Sends a CDP command to the page and returns its result. */
  // deno-lint-ignore no-explicit-any
  send(method: string, params?: Record<string, unknown>): Promise<any>;
  /** Every event the page sent so far, in order. */
  readonly events: readonly CdpEvent[];
  /** Stops Chromium and removes its profile. */
  close(): Promise<void>;
}

/** The flags Chromium needs to run headless as root in a sandbox-less container, quietly. */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-dev-shm-usage",
  "--remote-debugging-port=0",
];

/**
 * Starts Chromium with a fresh profile and opens one blank page.
 *
 * @param binary `CHROMIUM`, else `chromium` on the PATH.
 */
export async function launchChromium(binary = Deno.env.get("CHROMIUM") ?? "chromium"): Promise<ChromiumPage> {
  const profile = await Deno.makeTempDir({ prefix: "chromium-profile-" });
  const process = new Deno.Command(binary, {
    args: [...FLAGS, `--user-data-dir=${profile}`, "about:blank"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      process.kill("SIGKILL");
    } catch { /* exited */ }
    await process.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  };
  try {
    const socket = await connect(await devToolsUrl(profile));
    const session = socket.session();
    const { targetId } = await socket.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await socket.send("Target.attachToTarget", { targetId, flatten: true });
    return {
      send: (method, params) => socket.send(method, params, sessionId),
      events: session.events(sessionId),
      close: async () => {
        socket.close();
        await stop();
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Chromium writes its DevTools port and browser path to `DevToolsActivePort` in the profile once ready. */
async function devToolsUrl(profile: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const [port, path] = (await Deno.readTextFile(`${profile}/DevToolsActivePort`)).trim().split("\n");
      if (port && path) return `ws://127.0.0.1:${port}${path}`;
    } catch { /* not written yet */ }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("Chromium did not open its DevTools port within 30 s");
}

async function connect(url: string) {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error(`cannot connect to ${url}`));
  });
  let nextId = 1;
  // deno-lint-ignore no-explicit-any
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const events = new Map<string, CdpEvent[]>();
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (typeof data.id === "number") {
      const waiter = pending.get(data.id);
      pending.delete(data.id);
      if (data.error) waiter?.reject(new Error(`${data.error.message} (${data.error.code})`));
      else waiter?.resolve(data.result);
    } else if (data.method) {
      const list = events.get(data.sessionId ?? "") ?? [];
      list.push({ method: data.method, params: data.params });
      events.set(data.sessionId ?? "", list);
    }
  };
  socket.onclose = () => {
    for (const waiter of pending.values()) waiter.reject(new Error("the DevTools connection closed"));
    pending.clear();
  };
  return {
    // deno-lint-ignore no-explicit-any
    send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<any> {
      const id = nextId++;
      socket.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
      return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
    },
    session: () => ({
      events: (sessionId: string): CdpEvent[] => {
        const list = events.get(sessionId) ?? [];
        events.set(sessionId, list);
        return list;
      },
    }),
    close: () => socket.close(),
  };
}
