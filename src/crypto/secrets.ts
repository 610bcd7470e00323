import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import type { Config } from "../config.js";

export interface Secrets {
  /** Encrypts signing keys at rest (AES-256-GCM). */
  readonly keyEncryptionKey: Buffer;
  /** Keys the HMAC-SHA-256 of refresh tokens, codes and links. */
  readonly tokenSecret: Buffer;
}

const fileSchema = z.object({ keyEncryptionKey: z.string(), tokenSecret: z.string() });

/**
 * The server secrets: from configuration, or, for the embedded database only, from
 * <dataDir>/secrets.json, created with fresh random values on first start (mode 0600). An
 * external database needs them configured, since every instance must share them (the
 * configuration check says so).
 */
export async function loadSecrets(config: Config): Promise<Secrets> {
  if (config.keyEncryptionKey && config.tokenSecret) {
    return {
      keyEncryptionKey: config.keyEncryptionKey.subarray(0, 32),
      tokenSecret: config.tokenSecret,
    };
  }
  const file = path.resolve(config.dataDir, "secrets.json");
  let stored: z.infer<typeof fileSchema>;
  try {
    stored = fileSchema.parse(JSON.parse(await readFile(file, "utf8")));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new Error(`${file} is unreadable or malformed; restore it or the data stays sealed`, {
        cause: error,
      });
    }
    stored = {
      keyEncryptionKey: randomBytes(32).toString("base64"),
      tokenSecret: randomBytes(32).toString("base64"),
    };
    await mkdir(path.dirname(file), { recursive: true });
    // "wx": two processes racing on a fresh directory cannot both write it.
    await writeFile(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600, flag: "wx" });
  }
  return {
    keyEncryptionKey:
      config.keyEncryptionKey?.subarray(0, 32) ?? Buffer.from(stored.keyEncryptionKey, "base64"),
    tokenSecret: config.tokenSecret ?? Buffer.from(stored.tokenSecret, "base64"),
  };
}
