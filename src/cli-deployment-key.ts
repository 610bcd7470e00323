import { parseArgs } from "node:util";
import { toJsonString } from "@bufbuild/protobuf";
import { CreateAdminKeyResponseSchema } from "../gen/keygate/v1/admin_service_pb.js";
import { loadMigrations, missingMigrations } from "./db/migrate.js";
import { openDatabase } from "./db/pool.js";
import { createDeploymentAdminKey } from "./domain/deployment-admin-key.js";
import { adminKeyOf } from "./handlers/admin/keys.js";
import {
  databaseStartupError,
  describeDatabase,
  exitCodes,
  migrationsPendingError,
  StartupError,
} from "./startup-failure.js";

export const deploymentKeyUsage = `  admin-key create --deployment [--name NAME] [--role admin|read_only] [--introspect] [--expires ISO-TIME]
      straight against DATABASE_URL, no server and no admin key needed`;

/**
 * `keygate admin-key create --deployment ...`: mints a deployment-wide admin key in the
 * database named by DATABASE_URL and prints it once, as CreateAdminKey's answer. Needs only
 * DATABASE_URL: the secrets and mail settings a server needs play no part here.
 */
export async function runDeploymentKeyCommand(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<number> {
  let values: {
    name?: string | undefined;
    role?: string | undefined;
    introspect?: boolean | undefined;
    expires?: string | undefined;
  };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        deployment: { type: "boolean" },
        name: { type: "string", default: "operator" },
        role: { type: "string", default: "admin" },
        introspect: { type: "boolean", default: false },
        expires: { type: "string" },
      },
    }));
  } catch (error) {
    console.error(`${(error as Error).message}\n\nUsage:\n${deploymentKeyUsage}`);
    return 2;
  }
  const role = values.role === "admin" || values.role === "read_only" ? values.role : undefined;
  if (role === undefined) {
    console.error("--role is admin or read_only");
    return 2;
  }
  const expiresAt = values.expires ? new Date(values.expires) : undefined;
  if (expiresAt && Number.isNaN(expiresAt.getTime())) {
    console.error("--expires is not a time");
    return 2;
  }
  const databaseUrl = env.DATABASE_URL || undefined;
  if (!databaseUrl || !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    console.error(
      "admin-key create --deployment: DATABASE_URL must name the deployment's PostgreSQL " +
        "(postgres://…); an embedded database prints its deployment key on its first start",
    );
    return exitCodes.config;
  }
  const target = { databaseUrl };
  try {
    const database = await openDatabase({ databaseUrl, dbPoolSize: 1, dataDir: "" });
    try {
      const migrations = await loadMigrations();
      const missing = await missingMigrations(database.pool, migrations);
      if (missing.length > 0) {
        throw migrationsPendingError(
          describeDatabase(target),
          `${missing.length} of ${migrations.length} migrations missing`,
        );
      }
      const { key, secret } = await createDeploymentAdminKey(database.pool, {
        name: values.name ?? "operator",
        role,
        introspect: values.introspect ?? false,
        expiresAt,
      });
      process.stdout.write(
        `${toJsonString(CreateAdminKeyResponseSchema, { $typeName: CreateAdminKeyResponseSchema.typeName, adminKey: adminKeyOf(key), secret }, { prettySpaces: 2 })}\n`,
      );
      return 0;
    } finally {
      await database.close();
    }
  } catch (error) {
    const failure = error instanceof StartupError ? error : databaseStartupError(error, target);
    if (!failure) throw error;
    console.error(failure.message);
    return failure.exitCode;
  }
}
