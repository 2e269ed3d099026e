/** Finds the deployable functions under `supabase/functions` and imports their handlers. */

import { type FunctionSettings, settingsFor } from "./config.ts";
import type { DeployedFunction } from "./server.ts";

/** A handler as the gateway calls it. */
type Handler = DeployedFunction["handler"];

/**
 * The names of the function folders in `dir`: every folder with an `index.ts`, except shared code
 * (`_shared` and any other name starting with `_` or `.`), sorted.
 */
export async function discoverFunctionNames(dir: URL): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isDirectory || entry.name.startsWith("_") || entry.name.startsWith(".")) continue;
    try {
      const stat = await Deno.stat(new URL(`${entry.name}/index.ts`, dir));
      if (stat.isFile) names.push(entry.name);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return names.sort();
}

/**
 * The handler a function module exports: `handler`, else a default export that is a function, else the
 * `fetch` of a default export object (`export default { fetch } satisfies Deno.ServeDefaultExport`).
 */
export function handlerOf(module: Record<string, unknown>, name: string): Handler {
  const fetchOf = (module.default as { fetch?: unknown } | undefined)?.fetch;
  const candidate = module.handler ??
    (typeof fetchOf === "function" ? fetchOf.bind(module.default) : module.default);
  if (typeof candidate !== "function") {
    throw new Error(`supabase/functions/${name}/index.ts exports no handler (export const handler = ...)`);
  }
  return candidate as Handler;
}

/**
 * Imports each function's `index.ts` once (its `import.meta.main` server does not start) and pairs the
 * handler with the function's config.toml settings.
 */
export async function loadFunctions(
  dir: URL,
  settings: Map<string, FunctionSettings>,
): Promise<Map<string, DeployedFunction>> {
  const functions = new Map<string, DeployedFunction>();
  for (const name of await discoverFunctionNames(dir)) {
    const module = await import(new URL(`${name}/index.ts`, dir).href);
    functions.set(name, {
      handler: handlerOf(module, name),
      verifyJwt: settingsFor(settings, name).verifyJwt,
    });
  }
  return functions;
}
