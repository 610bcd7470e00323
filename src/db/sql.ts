import { createHash } from "node:crypto";
import { sql } from "slonik";
import { z } from "zod";

export { sql };

/** Row type for statements whose result is not read (Slonik's `void` alias). */
export const voidRow = z.object({}).strict();

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

type JoinedParts = Record<string, { readonly alias: string; readonly row: z.ZodObject }>;

/**
 * The rows of several tables from one joined query, each checked against its own row schema:
 * `columns` selects every column of each part's schema from its table alias, named
 * `<part>.<column>`, and `row` parses that flat row back into one row per part, so
 * `SELECT ${columns} FROM sessions s JOIN users u …` answers `{ session, user }`.
 */
export function joined<P extends JoinedParts>(parts: P) {
  const entries = Object.entries(parts);
  const columns = sql.join(
    entries.flatMap(([part, { alias, row }]) =>
      Object.keys(row.shape).map(
        (column) =>
          sql.fragment`${sql.identifier([alias, column])} AS ${sql.identifier([`${part}.${column}`])}`,
      ),
    ),
    sql.fragment`, `,
  );
  const flat = z.object(
    Object.fromEntries(
      entries.flatMap(([part, { row }]) =>
        Object.entries(row.shape).map(([column, type]) => [`${part}.${column}`, type]),
      ),
    ),
  );
  const row = flat.transform(
    (r) =>
      Object.fromEntries(
        entries.map(([part, { row }]) => [
          part,
          Object.fromEntries(Object.keys(row.shape).map((c) => [c, r[`${part}.${c}`]])),
        ]),
      ) as { [K in keyof P]: z.output<P[K]["row"]> },
  );
  return { columns, row };
}
