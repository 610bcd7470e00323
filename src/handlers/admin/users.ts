import type { ServiceImpl } from "@connectrpc/connect";
import type { AdminService } from "../../../gen/keygate/v1/admin_service_pb.js";
import type { AdminDeps } from "../../domain/deps.js";

/** AdminService RPCs about users. */
export function adminUsersHandlers(_deps: AdminDeps): Partial<ServiceImpl<typeof AdminService>> {
  return {};
}
