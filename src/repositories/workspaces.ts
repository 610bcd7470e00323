import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

export const workspaceRow = z.object({
  id: z.string(),
  name: z.string(),
  slug: z.string(),
  created_at: z.number(),
  updated_at: z.number(),
});
export type WorkspaceRow = z.infer<typeof workspaceRow>;

export async function insertWorkspace(
  db: CommonQueryMethods,
  input: { name: string; slug: string },
): Promise<WorkspaceRow> {
  return db.one(sql.type(workspaceRow)`
    INSERT INTO workspaces (name, slug) VALUES (${input.name}, ${input.slug})
    RETURNING id, name, slug, created_at, updated_at`);
}

export async function countWorkspaces(db: CommonQueryMethods): Promise<number> {
  return db.oneFirst(sql.type(z.object({ count: z.number() }))`
    SELECT count(*)::int AS count FROM workspaces`);
}
