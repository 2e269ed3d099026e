/** Plain-text tables for the admin CLI. */

/**
 * `rows` as an aligned table of `columns` (numbers right-aligned, `null` blank, dates as ISO text).
 *
 * @param columns The columns, in order.
 * @param rows The rows.
 * @returns The table, one line per row under a header and a rule.
 */
export function renderTable(columns: string[], rows: Record<string, unknown>[]): string {
  const cells = rows.map((row) => columns.map((c) => cell(row[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const numeric = columns.map((_, i) => cells.every((r) => r[i] === "" || /^-?\d+(\.\d+)?$/.test(r[i]!)));
  const line = (values: string[]) =>
    values.map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(columns), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}

function cell(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (value instanceof Date) return value.toISOString();
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
