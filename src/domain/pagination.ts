import type { z } from "zod";
import { InvalidArgumentError } from "../errors.js";

export const defaultPageSize = 100;
export const maxPageSize = 1000;

/** page_size: 0 means the default; above the maximum is clamped to it. */
export function pageSize(requested: number): number {
  if (requested === 0) return defaultPageSize;
  return Math.min(requested, maxPageSize);
}

/** Page tokens are opaque to clients: base64url JSON naming the list they belong to. */
export function encodePageToken(list: string, cursor: object): string {
  return Buffer.from(JSON.stringify({ l: list, ...cursor })).toString("base64url");
}

/**
 * The page of `rows`, fetched with `limit + 1` so that the row past the page tells whether
 * another follows, and the token of the next page ("" after the last), naming `list` and the
 * cursor of the page's last row.
 */
export function pageOf<R>(
  rows: readonly R[],
  limit: number,
  list: string,
  cursorOf: (last: R) => object,
): { page: readonly R[]; nextPageToken: string } {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    page,
    nextPageToken:
      rows.length > limit && last !== undefined ? encodePageToken(list, cursorOf(last)) : "",
  };
}

export function decodePageToken<T extends z.ZodType>(
  token: string,
  list: string,
  schema: T,
): z.infer<T> | undefined {
  if (token === "") return undefined;
  try {
    const raw = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { l?: unknown };
    if (raw.l === list) {
      const parsed = schema.safeParse(raw);
      if (parsed.success) return parsed.data;
    }
  } catch {
    // fall through
  }
  throw new InvalidArgumentError(
    [{ field: "page_token", description: "is malformed or belongs to another list" }],
    "INVALID_PAGE_TOKEN",
  );
}
