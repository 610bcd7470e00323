import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { AdminService } from "../../../gen/keygate/v1/admin_service_pb.js";
import {
  AdminKeyRole,
  AdminKeySchema,
  SigningKeyPurpose,
  SigningKeySchema,
  SigningKeyStatus,
} from "../../../gen/keygate/v1/types_pb.js";
import { createAdminKey } from "../../domain/admin/keys-create.js";
import { listAdminKeys } from "../../domain/admin/keys-list.js";
import { revokeAdminKey } from "../../domain/admin/keys-revoke.js";
import { listSigningKeys, rotateSigningKey } from "../../domain/admin/signing-keys.js";
import { revokeSigningKey } from "../../domain/admin/signing-keys-revoke.js";
import type { AdminDeps } from "../../domain/deps.js";
import type { AdminKeyRow, SigningKeyInfoRow } from "../../domain/model.js";
import { meta } from "../call-context.js";
import { callerOf } from "./caller.js";

type Impl = ServiceImpl<typeof AdminService>;

const roleToProto = { read_only: AdminKeyRole.READ_ONLY, admin: AdminKeyRole.ADMIN } as const;
const statusToProto = {
  next: SigningKeyStatus.NEXT,
  active: SigningKeyStatus.ACTIVE,
  retired: SigningKeyStatus.RETIRED,
  revoked: SigningKeyStatus.REVOKED,
} as const;

function roleFromProto(role: AdminKeyRole): "read_only" | "admin" | undefined {
  if (role === AdminKeyRole.READ_ONLY) return "read_only";
  if (role === AdminKeyRole.ADMIN) return "admin";
  return undefined;
}

const time = (ms: number | null) => (ms === null ? undefined : timestampFromMs(Math.floor(ms)));

/** An admin key as the API shows it: never the secret nor its hash (the row holds neither). */
export function adminKeyOf(k: AdminKeyRow) {
  return create(AdminKeySchema, {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    workspaceId: k.workspace_id ?? "",
    role: roleToProto[k.role],
    introspect: k.introspect,
    createTime: time(k.created_at),
    lastUseTime: time(k.last_used_at),
    revokeTime: time(k.revoked_at),
    expireTime: time(k.expires_at),
    createdBy: k.created_by,
    createdByUserId: k.created_by_user_id ?? "",
  });
}

/** A signing key as the API shows it: the row type has no key material at all. */
export function signingKeyOf(k: SigningKeyInfoRow) {
  return create(SigningKeySchema, {
    kid: k.kid,
    algorithm: k.algorithm,
    status: statusToProto[k.status],
    createTime: time(k.created_at),
    activateTime: time(k.activated_at),
    retireTime: time(k.retired_at),
    unpublishTime:
      k.status === "retired"
        ? time(k.unpublish_after)
        : k.status === "revoked"
          ? time(k.revoked_at)
          : undefined,
    revokeTime: time(k.revoked_at),
    purpose: k.purpose === "id_token" ? SigningKeyPurpose.ID_TOKEN : SigningKeyPurpose.ACCESS_TOKEN,
  });
}

/** AdminService RPCs about keys: admin keys and token signing keys. */
export function adminKeysHandlers(deps: AdminDeps) {
  return {
    async createAdminKey(req, ctx) {
      const { key, secret } = await createAdminKey(deps, meta(ctx), callerOf(ctx), {
        name: req.name,
        workspaceId: req.workspaceId,
        role: roleFromProto(req.role),
        introspect: req.introspect,
        expireTime: req.expireTime ? timestampDate(req.expireTime) : undefined,
      });
      return { adminKey: adminKeyOf(key), secret };
    },

    async listAdminKeys(req, ctx) {
      const page = await listAdminKeys(deps, callerOf(ctx), {
        workspaceId: req.workspaceId,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      return { adminKeys: page.keys.map(adminKeyOf), nextPageToken: page.nextPageToken };
    },

    async revokeAdminKey(req, ctx) {
      const key = await revokeAdminKey(deps, meta(ctx), callerOf(ctx), {
        adminKeyId: req.adminKeyId,
      });
      return { adminKey: adminKeyOf(key) };
    },

    async rotateSigningKey(req, ctx) {
      const key = await rotateSigningKey(deps, meta(ctx), callerOf(ctx), {
        algorithm: req.algorithm,
      });
      return { signingKey: signingKeyOf(key) };
    },

    async revokeSigningKey(req, ctx) {
      const { key, promoted } = await revokeSigningKey(deps, meta(ctx), callerOf(ctx), {
        kid: req.kid,
      });
      return { signingKey: signingKeyOf(key), promotedKid: promoted ?? "" };
    },

    async listSigningKeys(_req, ctx) {
      const keys = await listSigningKeys(deps, callerOf(ctx));
      return { signingKeys: keys.map(signingKeyOf) };
    },
  } satisfies Partial<Impl>;
}
