/**
 * End-to-end test support: real HTTP against the running functions gateway, real Postgres for counting
 * side effects, fresh users in auth.users that are deleted (with every row they own) after each test.
 */

import postgres from "postgres";
import {
  type TransactionalHandler,
  type TransactionalOptions,
  withIdempotentTransaction,
} from "../../supabase/functions/_shared/idempotency.ts";
import { openPool, type PostgresClient } from "../../supabase/functions/_shared/idempotency/pool.ts";
import { JWT_SECRET, signJwt } from "../support/jwt.ts";

/** The gateway's base URL. */
export const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";
/** The database the functions write, as its superuser. */
export const DB_URL = Deno.env.get("DB_URL") ?? Deno.env.get("SUPABASE_DB_URL") ??
  "postgresql://postgres:postgres@127.0.0.1:54322/postgres";

/** The project's anon key (role anon, no user). */
export const anonKey = () => signJwt({ iss: "supabase-demo", role: "anon" });
/** The project's service role key (role service_role, no user). */
export const serviceRoleKey = () => signJwt({ iss: "supabase-demo", role: "service_role" });

/** A user inserted into auth.users for one test. */
export interface TestUser {
  id: string;
  /** A valid access token for the user (role authenticated, `sub` = id). */
  token: string;
}

/** What one test gets. */
export interface E2eContext {
  /** A superuser connection to the database. */
  sql: postgres.Sql;
  /** Inserts a fresh user; it and all its rows (cascade) are deleted after the test. */
  newUser(): Promise<TestUser>;
  /** A fresh, valid idempotency key. */
  newKey(): string;
  /** Runs `fn` after the test, before the users are deleted (newest first). */
  defer(fn: () => Promise<unknown>): void;
}

/**
 * Declares a test with its own database connection and users, cleaned up however the test ends. The
 * sanitizers stay on: the connection is ended and every response body is read within the test.
 */
export function e2eTest(name: string, fn: (ctx: E2eContext) => Promise<void>): void {
  Deno.test(name, async () => {
    const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });
    const users: string[] = [];
    const deferred: (() => Promise<unknown>)[] = [];
    const ctx: E2eContext = {
      sql,
      async newUser() {
        const email = `e2e-${crypto.randomUUID()}@test.local`;
        const [row] = await sql<
          { id: string }[]
        >`insert into auth.users (email) values (${email}) returning id`;
        users.push(row!.id);
        return {
          id: row!.id,
          token: await signJwt({ sub: row!.id, role: "authenticated", aud: "authenticated", email }),
        };
      },
      newKey: () => `e2e-${crypto.randomUUID()}`,
      defer: (cleanup) => void deferred.unshift(cleanup),
    };
    try {
      await fn(ctx);
    } finally {
      try {
        for (const cleanup of deferred) await cleanup();
        if (users.length > 0) await sql`delete from auth.users where id = any(${users}::uuid[])`;
      } finally {
        await sql.end({ timeout: 5 });
      }
    }
  });
}

/** One request to a function. */
export interface CallOptions {
  /** The bearer token; none when omitted. */
  token?: string | undefined;
  /** Sent as `Idempotency-Key`. */
  key?: string;
  /** Any other headers (e.g. `X-Idempotency-Key`). */
  headers?: Record<string, string>;
  /** JSON-encoded unless a string. */
  body?: unknown;
  /** Default POST. */
  method?: string;
}

/** A function's answer, body read and parsed. */
export interface CallResult {
  status: number;
  headers: Headers;
  /** The parsed JSON body (or the text when it is not JSON; `null` when empty). */
  // deno-lint-ignore no-explicit-any
  body: any;
  /** The raw body text. */
  text: string;
  /** `X-Idempotency-Replay`, or `null` when absent. */
  replay: string | null;
}

/** Calls `/functions/v1/<name>` over HTTP. */
export async function callFunction(name: string, options: CallOptions = {}): Promise<CallResult> {
  const headers: Record<string, string> = { "content-type": "application/json", ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.key !== undefined) headers["idempotency-key"] = options.key;
  const res = await fetch(`${API_URL}/functions/v1/${name}`, {
    method: options.method ?? "POST",
    headers,
    body: options.body === undefined
      ? null
      : typeof options.body === "string"
      ? options.body
      : JSON.stringify(options.body),
  });
  const text = await res.text();
  let body: unknown = null;
  if (text !== "") {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  return {
    status: res.status,
    headers: res.headers,
    body,
    text,
    replay: res.headers.get("x-idempotency-replay"),
  };
}

/** How many rows of `table` belong to `userId`. */
export async function countRows(sql: postgres.Sql, table: string, userId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from ${
    sql(table)
  } where user_id = ${userId}`;
  return row!.n;
}

/** The idempotency_keys row of `key` for `userId` (null: the shared scope), or undefined. */
export async function keyRow(
  sql: postgres.Sql,
  key: string,
  userId: string | null,
): Promise<
  | {
    status: string;
    attempt_count: number;
    replay_count: number;
    status_code: number | null;
    function_name: string;
  }
  | undefined
> {
  const [row] = await sql<
    {
      status: string;
      attempt_count: number;
      replay_count: number;
      status_code: number | null;
      function_name: string;
    }[]
  >`
    select status, attempt_count, replay_count, status_code, function_name from public.idempotency_keys
    where idempotency_key = ${key} and user_id is not distinct from ${userId}::uuid`;
  return row;
}

/** A process-document request body with a unique title. */
export function documentBody(title = `Doc ${crypto.randomUUID().slice(0, 8)}`) {
  return { title, content: "Revenue grew in every region. Costs fell. Revenue matters most to investors." };
}

/**
 * Declares an e2e test of `withIdempotentTransaction` in process, with a pool of its own for the wrapper
 * under test (ended however the test ends): the database, or the transaction pooler when TX_DB_URL names it
 * (scripts/test.sh runs the transactional files through pgbouncer too).
 */
export function transactionalTest(
  name: string,
  fn: (ctx: E2eContext, sql: PostgresClient) => Promise<void>,
): void {
  e2eTest(name, async (ctx) => {
    const sql = openPool({ url: Deno.env.get("TX_DB_URL") ?? DB_URL, max: 8 });
    try {
      await fn(ctx, sql);
    } finally {
      await sql.end();
    }
  });
}

/** A handler that inserts one document for the caller through the transaction, after `gate` resolves. */
export function documentHandler(gate: () => Promise<void> = () => Promise.resolve()): TransactionalHandler {
  return async (req, { tx, caller }) => {
    const { title } = await req.json();
    const [doc] = await tx<{ id: string }[]>`
      insert into public.documents (user_id, title, content, content_sha256, word_count)
      values (${caller.userId}, ${title}, 'x', ${"0".repeat(64)}, 1) returning id`;
    await gate();
    return Response.json({ id: doc!.id, caller }, { status: 201 });
  };
}

/** `user`'s POST with `body`, keyed unless `key` is null, as a wrapped handler is called in process. */
export function userRequest(user: TestUser, key: string | null, body: unknown = { title: "T" }): Request {
  const headers: Record<string, string> = {
    authorization: `Bearer ${user.token}`,
    "content-type": "application/json",
  };
  if (key !== null) headers["idempotency-key"] = key;
  return new Request("http://local/functions/v1/tx-test", {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
}

/** `handler` wrapped on `sql`, verifying the stack's tokens, logging nothing; `options` override. */
export function wrapTransactional(
  sql: PostgresClient,
  handler: TransactionalHandler,
  options: Partial<TransactionalOptions> = {},
) {
  return withIdempotentTransaction(handler, {
    functionName: "tx-test",
    sql,
    jwtSecret: JWT_SECRET,
    logger: { error: () => {}, warn: () => {} },
    ...options,
  });
}
