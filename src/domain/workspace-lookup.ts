import type { CommonQueryMethods } from "slonik";
import { NotFoundError } from "../errors.js";
import {
  findWorkspaceById,
  findWorkspaceBySlug,
  type WorkspaceRow,
} from "../repositories/workspaces.js";
import { isUuid, Violations } from "./validate.js";

/**
 * The workspace a public call is about: by id, by slug, or from the x-workspace-id header,
 * in that order. Unknown workspaces are NOT_FOUND.
 */
export async function lookUpWorkspace(
  db: CommonQueryMethods,
  input: { workspaceId?: string; workspaceSlug?: string; header: string | null; field?: string },
): Promise<WorkspaceRow> {
  const field = input.field ?? "workspace_id";
  const id = input.workspaceId || (input.workspaceSlug ? "" : (input.header ?? ""));
  if (id) {
    if (!isUuid(id)) new Violations().add(field, "is not a valid id").throwIfAny();
    const found = await findWorkspaceById(db, id);
    if (found) return found;
    throw new NotFoundError("workspace not found");
  }
  if (input.workspaceSlug) {
    const found = await findWorkspaceBySlug(db, input.workspaceSlug);
    if (found) return found;
    throw new NotFoundError("workspace not found");
  }
  new Violations().add(field, "is required (or the x-workspace-id header)").throwIfAny();
  throw new Error("unreachable");
}
