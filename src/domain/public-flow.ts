import { setTimeout as sleep } from "node:timers/promises";
import type { RateLimitName, WorkspaceSettings } from "../config.js";
import { NotFoundError } from "../errors.js";
import { normalizeEmail } from "../repositories/users.js";
import type { WorkspaceRow } from "../repositories/workspaces.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

/**
 * The common start of a public "email me something" flow: the address is valid, the
 * workspace exists and has the flow switched on (NOT_FOUND otherwise, as for an unknown RPC),
 * and the caller's IP and the address are within their rate limits. Nothing here depends on
 * whether the address has an account.
 */
export async function startEmailFlow(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { email: string; workspaceId: string; workspaceSlug: string },
  flow: {
    enabled(settings: WorkspaceSettings): boolean;
    name: string;
    limits: readonly [ip: RateLimitName, address: RateLimitName];
  },
): Promise<{ workspace: WorkspaceRow; settings: WorkspaceSettings }> {
  new Violations().email("email", input.email).throwIfAny();
  const workspace = await lookUpWorkspace(deps.pool, { ...input, header: meta.workspaceHeader });
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (!flow.enabled(settings)) throw new NotFoundError(`${flow.name} is disabled`);
  await deps.limiter.hit({ id: workspace.id, settings }, [
    [flow.limits[0], meta.ipAddress ?? "unknown"],
    [flow.limits[1], normalizeEmail(input.email)],
  ]);
  return { workspace, settings };
}

/**
 * How long a public "email me something" call takes at least. With an account the call
 * writes a code and an outbox row before answering; without one it does not, and the
 * enumeration-timing test measured that difference (8-27 ms at the median, SECURITY.md 17).
 * Answering no sooner than this from the start hides it whenever the work fits inside.
 */
export const emailFlowFloorMs = 200;

/** Starts the clock of a public email flow; the returned function waits out the floor. */
export function answerFloor(): () => Promise<void> {
  const started = performance.now();
  return async () => {
    const left = started + emailFlowFloorMs - performance.now();
    if (left > 0) await sleep(left);
  };
}
