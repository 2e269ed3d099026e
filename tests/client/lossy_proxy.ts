/**
 * A TCP proxy on localhost that loses responses: for the first `drop` connections it forwards the request,
 * waits until the server starts answering (so the server did the work and stored it), then closes the
 * client's connection without a byte of the answer. Later connections pass through untouched.
 */

/** A running proxy. */
export interface LossyProxy {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** How many answers were lost so far. */
  readonly dropped: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/**
 * Starts the proxy in front of `upstreamPort`.
 *
 * @param upstreamPort The gateway's port on 127.0.0.1.
 * @param drop How many answers to lose.
 * @param port The port to listen on: `CLIENT_PROXY_PORT`, else any free port.
 */
export function startLossyProxy(
  upstreamPort: number,
  drop: number,
  port = Number(Deno.env.get("CLIENT_PROXY_PORT") ?? 0),
): LossyProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const state = { toDrop: drop, dropped: 0 };
  const conns = new Set<Deno.Conn>();
  const handlers: Promise<void>[] = [];
  const closeConn = (conn: Deno.Conn) => {
    if (conns.delete(conn)) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };

  async function handle(client: Deno.Conn): Promise<void> {
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    conns.add(client).add(upstream);
    const requestSide = client.readable.pipeTo(upstream.writable, { preventClose: true }).catch(() => {});
    try {
      if (state.toDrop > 0) {
        state.toDrop--;
        const reader = upstream.readable.getReader();
        await reader.read(); // the first bytes of the answer: the work is done and stored
        state.dropped++;
        reader.releaseLock();
      } else {
        await upstream.readable.pipeTo(client.writable, { preventClose: true });
      }
    } catch { /* a side closed */ }
    closeConn(client);
    closeConn(upstream);
    await requestSide;
  }

  const accepting = (async () => {
    for await (const conn of listener) handlers.push(handle(conn));
  })().catch(() => {});

  const { port: bound } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${bound}`,
    get dropped() {
      return state.dropped;
    },
    async close() {
      listener.close();
      await accepting;
      for (const conn of [...conns]) closeConn(conn);
      await Promise.allSettled(handlers);
    },
  };
}
