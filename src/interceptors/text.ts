import { type DescField, type Message, ScalarType } from "@bufbuild/protobuf";
import { type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";
import type { Interceptor } from "@connectrpc/connect";
import { InvalidArgumentError } from "../errors.js";

/**
 * Refuses requests with U+0000 in any string field, wherever it is nested. PostgreSQL text
 * cannot hold it (the query fails), no field of Keygate's has a use for it, and checking every
 * field here keeps each RPC's validation from having to remember it. The violation names the
 * field by its path, such as `types[0]` or `user.display_name`.
 */
export function textInterceptor(): Interceptor {
  return (next) => async (req) => {
    const check = (message: unknown) => {
      const field = fieldWithNul(reflect(req.method.input, message as Message));
      if (field !== undefined) {
        throw new InvalidArgumentError([
          { field, description: "must not contain NUL characters (U+0000)" },
        ]);
      }
    };
    if (!req.stream) {
      check(req.message);
      return next(req);
    }
    // A streamed request (server streaming included): each message as the handler reads it.
    const messages = req.message;
    async function* checked() {
      for await (const message of messages) {
        check(message);
        yield message;
      }
    }
    return next({ ...req, message: checked() });
  };
}

/** The path of the first string (or string map key) that holds U+0000, if any. */
export function fieldWithNul(message: ReflectMessage, prefix = ""): string | undefined {
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    const path = prefix + field.name;
    const found = inField(message, field, path);
    if (found !== undefined) return found;
  }
  return undefined;
}

const hasNul = (value: unknown) => typeof value === "string" && value.includes("\0");

function inField(message: ReflectMessage, field: DescField, path: string): string | undefined {
  switch (field.fieldKind) {
    case "scalar":
      return field.scalar === ScalarType.STRING && hasNul(message.get(field)) ? path : undefined;
    case "message":
      return fieldWithNul(message.get(field), `${path}.`);
    case "list": {
      if (field.listKind === "enum") return undefined;
      if (field.listKind === "scalar" && field.scalar !== ScalarType.STRING) return undefined;
      for (const [i, value] of message.get(field).entries()) {
        const at = `${path}[${i}]`;
        if (field.listKind === "message") {
          const found = fieldWithNul(value as ReflectMessage, `${at}.`);
          if (found !== undefined) return found;
        } else if (hasNul(value)) return at;
      }
      return undefined;
    }
    case "map":
      for (const [key, value] of message.get(field)) {
        const at = `${path}[${JSON.stringify(String(key))}]`;
        if (hasNul(key)) return at;
        if (field.mapKind === "message") {
          const found = fieldWithNul(value as ReflectMessage, `${at}.`);
          if (found !== undefined) return found;
        } else if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING) {
          if (hasNul(value)) return at;
        }
      }
      return undefined;
    default:
      return undefined;
  }
}
