import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

const countRow = z.object({ count: z.number() });

export const workspaceRow = z.object({
  id: z.string(),
  name: z.string(),
  slug: z.string(),
  settings: z.record(z.string(), z.unknown()),
  created_at: z.number(),
  updated_at: z.number(),
});
export type WorkspaceRow = z.infer<typeof workspaceRow>;

const columns = sql.fragment`id, name, slug, settings, created_at, updated_at`;

export async function insertWorkspace(
  db: CommonQueryMethods,
  input: { name: string; slug: string },
): Promise<WorkspaceRow> {
  return db.one(sql.type(workspaceRow)`
    INSERT INTO workspaces (name, slug) VALUES (${input.name}, ${input.slug})
    RETURNING ${columns}`);
}

export async function findWorkspaceById(
  db: CommonQueryMethods,
  id: string,
): Promise<WorkspaceRow | null> {
  return db.maybeOne(sql.type(workspaceRow)`SELECT ${columns} FROM workspaces WHERE id = ${id}`);
}

export async function findWorkspaceBySlug(
  db: CommonQueryMethods,
  slug: string,
): Promise<WorkspaceRow | null> {
  return db.maybeOne(
    sql.type(workspaceRow)`SELECT ${columns} FROM workspaces WHERE slug = ${slug}`,
  );
}

export async function countWorkspaces(db: CommonQueryMethods): Promise<number> {
  return db.oneFirst(sql.type(countRow)`
    SELECT count(*)::int AS count FROM workspaces`);
}
