import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "./sql.js";

const readOnlyRow = z.object({ read_only: z.boolean() });

/**
 * Whether the server the connection reached refuses writes: a standby, or a primary demoted
 * during a failover, which the database's address may lead to for a while.
 */
export async function databaseReadOnly(db: CommonQueryMethods): Promise<boolean> {
  return db.oneFirst(sql.type(readOnlyRow)`
    SELECT current_setting('transaction_read_only') = 'on' AS read_only`);
}
