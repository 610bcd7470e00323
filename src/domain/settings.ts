import { type WorkspaceSettings, workspaceSettingsSchema } from "../config.js";
import type { WorkspaceRow } from "../repositories/workspaces.js";

const stored = workspaceSettingsSchema.partial();

/** A workspace's own flags over the server defaults. Unknown or invalid stored keys are ignored. */
export function effectiveSettings(
  workspace: Pick<WorkspaceRow, "settings">,
  defaults: WorkspaceSettings,
): WorkspaceSettings {
  const parsed = stored.safeParse(workspace.settings);
  const own: Partial<WorkspaceSettings> = {};
  if (parsed.success) Object.assign(own, parsed.data);
  else {
    for (const [key, value] of Object.entries(workspace.settings)) {
      const one = stored.safeParse({ [key]: value });
      if (one.success) Object.assign(own, one.data);
    }
  }
  return { ...defaults, ...own };
}
