/**
 * The reference lives in the code, so a machine checks it: for every export of the public entry points,
 * on top of `deno doc --lint` (which wants a doc comment on each export and no private type in a public one),
 * this checks what `deno doc --lint` does not:
 *
 * - each export has a titled `@example` (`@example <title>` then the code);
 * - each function, constructor and method has a `@param` per parameter, and `@returns` unless it returns
 *   nothing;
 * - each optional property of an options interface (a name ending in `Options`) has a `@default`.
 *
 *   deno run --allow-run --allow-read scripts/doc-check.ts <entry.ts>...
 *
 * Prints every gap and exits 1 when there is one.
 */

interface Tag {
  kind: string;
  name?: string;
  doc?: string;
}
interface JsDoc {
  doc?: string;
  tags?: Tag[];
}
interface Param {
  kind: string;
  name?: string;
  left?: Param;
}
interface FunctionDef {
  params: Param[];
  returnType?: {
    repr?: string;
    kind?: string;
    value?: { typeName?: string; typeParams?: { repr?: string }[] };
  };
}
interface Declaration {
  kind: string;
  jsDoc?: JsDoc;
  location: { filename: string; line: number };
  def: {
    params?: Param[];
    returnType?: FunctionDef["returnType"];
    constructors?: { jsDoc?: JsDoc; params: Param[]; accessibility?: string }[];
    methods?: {
      name: string;
      jsDoc?: JsDoc;
      functionDef?: FunctionDef;
      params?: Param[];
      returnType?: FunctionDef["returnType"];
      accessibility?: string;
    }[];
    properties?: { name: string; optional?: boolean; jsDoc?: JsDoc }[];
  };
}
interface DocSymbol {
  name: string;
  declarations: Declaration[];
}

const tags = (doc: JsDoc | undefined, kind: string) => (doc?.tags ?? []).filter((tag) => tag.kind === kind);

function paramName(param: Param): string | undefined {
  return param.kind === "assign" ? paramName(param.left!) : param.name;
}

/** Whether a return type says "nothing": void, Promise<void>, or absent (a constructor). */
function returnsNothing(type: FunctionDef["returnType"]): boolean {
  if (!type) return true;
  if (type.repr === "void") return true;
  return type.value?.typeName === "Promise" && type.value.typeParams?.[0]?.repr === "void";
}

function checkCallable(
  where: string,
  doc: JsDoc | undefined,
  params: Param[],
  type: FunctionDef["returnType"],
) {
  const gaps: string[] = [];
  const documented = new Set(tags(doc, "param").map((tag) => tag.name?.split(".")[0]));
  for (const param of params) {
    const name = paramName(param);
    if (name !== undefined && !documented.has(name)) gaps.push(`${where}: no @param ${name}`);
  }
  if (!returnsNothing(type) && tags(doc, "return").length === 0) gaps.push(`${where}: no @returns`);
  return gaps;
}

function checkSymbol(symbol: DocSymbol): string[] {
  const gaps: string[] = [];
  for (const decl of symbol.declarations) {
    const at = `${
      decl.location.filename.replace(/^file:\/\/.*?supabase\//, "supabase/")
    }:${decl.location.line}`;
    const where = `${symbol.name} (${at})`;
    const examples = tags(decl.jsDoc, "example");
    if (!examples.some((tag) => /^[^\s`][^\n]*\n/.test(tag.doc ?? ""))) {
      gaps.push(`${where}: no titled @example`);
    }
    if (decl.kind === "function") {
      gaps.push(...checkCallable(where, decl.jsDoc, decl.def.params ?? [], decl.def.returnType));
    }
    for (const ctor of decl.def.constructors ?? []) {
      if (ctor.accessibility === "private") continue;
      gaps.push(...checkCallable(`${where} constructor`, ctor.jsDoc, ctor.params, undefined));
    }
    for (const method of decl.def.methods ?? []) {
      if (method.accessibility === "private" || method.name.startsWith("#")) continue;
      const fn = method.functionDef ?? { params: method.params ?? [], returnType: method.returnType };
      gaps.push(...checkCallable(`${where} .${method.name}()`, method.jsDoc, fn.params, fn.returnType));
    }
    if (decl.kind === "interface" && symbol.name.endsWith("Options")) {
      for (const property of decl.def.properties ?? []) {
        if (property.optional && tags(property.jsDoc, "default").length === 0) {
          gaps.push(`${where} .${property.name}: no @default`);
        }
      }
    }
  }
  return gaps;
}

/** The exported symbols of one entry, as `deno doc --json` lists them. */
async function symbolsOf(entry: string): Promise<DocSymbol[]> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["doc", "--json", entry], stderr: "null" })
    .output();
  if (!out.success) throw new Error(`deno doc --json ${entry} failed`);
  const json = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    nodes: Record<string, { symbols: DocSymbol[] }>;
  };
  return Object.values(json.nodes).flatMap((module) => module.symbols);
}

async function main(entries: string[]): Promise<number> {
  // one entry at a time: a symbol re-exported by two entries is then listed once per entry, as declared
  const symbols = (await Promise.all(entries.map(symbolsOf))).flat();
  const gaps = [...new Set(symbols.flatMap(checkSymbol))];
  for (const gap of gaps) console.log(gap);
  const count = new Set(symbols.map((symbol) => symbol.name)).size;
  console.log(
    gaps.length === 0 ? `doc-check: ${count} exports documented` : `doc-check: ${gaps.length} gaps`,
  );
  return gaps.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
