import { type DescField, type DescMessage, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { createContextKey, type Interceptor } from "@connectrpc/connect";
import { type FieldViolation, InvalidArgumentError } from "../errors.js";

/**
 * What a Connect JSON request body said that the request message has no room for, found by
 * the RPC adapter before connect-es decodes it (connect-es would answer a bare message, or,
 * with its default options, drop the field and carry on).
 */
export const jsonViolationsKey = createContextKey<readonly FieldViolation[]>([], {
  description: "fields of a JSON request body that do not fit the request message",
});

/**
 * Answers the violations the adapter found as INVALID_ARGUMENT, inside the error interceptor,
 * so they are logged, counted and detailed (google.rpc.BadRequest) like every other.
 */
export function jsonFieldsInterceptor(): Interceptor {
  return (next) => async (req) => {
    const violations = req.contextValues.get(jsonViolationsKey);
    if (violations.length > 0) throw new InvalidArgumentError(violations);
    return next(req);
  };
}

const maxViolations = 20;
const quote = (value: unknown) => JSON.stringify(value)?.slice(0, 64) ?? String(value);

/**
 * The fields of `json` that do not fit `desc`, by their path (`settings.otp_login`,
 * `settings.rateLimits` keys, `types[0]`): names the message does not have (as sent), enum
 * values it does not know, values of the wrong JSON type. Known fields are named by their
 * proto names, as the rest of the API's violations are. Well-known types (Timestamp, Struct,
 * FieldMask...) have their own JSON forms and are checked whole.
 */
export function jsonViolations(desc: DescMessage, json: unknown): FieldViolation[] {
  const out: FieldViolation[] = [];
  walkMessage(desc, json, "", out);
  return out.slice(0, maxViolations);
}

function walkMessage(desc: DescMessage, json: unknown, path: string, out: FieldViolation[]) {
  if (out.length >= maxViolations) return;
  if (desc.typeName.startsWith("google.protobuf.")) {
    checkWhole(desc, json, path, out);
    return;
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    if (path !== "")
      out.push({ field: path, description: `expected an object, got ${quote(json)}` });
    return;
  }
  for (const [key, value] of Object.entries(json)) {
    const field = desc.fields.find((f) => f.jsonName === key || f.name === key);
    if (!field) {
      out.push({
        field: join(path, key),
        description: `is not a field of ${desc.typeName}`,
        reason: "UNKNOWN_FIELD",
      });
      continue;
    }
    if (value !== null) walkField(desc, field, value, join(path, field.name), out);
  }
}

function walkField(
  parent: DescMessage,
  field: DescField,
  value: unknown,
  path: string,
  out: FieldViolation[],
) {
  switch (field.fieldKind) {
    case "message":
      walkMessage(field.message, value, path, out);
      return;
    case "enum":
      checkEnum(field.enum.values, value, path, out);
      return;
    case "scalar":
      checkScalar(parent, field, value, path, out);
      return;
    case "list":
      if (!Array.isArray(value)) {
        out.push({ field: path, description: `expected a list, got ${quote(value)}` });
        return;
      }
      value.forEach((item, i) => {
        const at = `${path}[${i}]`;
        if (field.listKind === "message") walkMessage(field.message, item, at, out);
        else if (field.listKind === "enum") checkEnum(field.enum.values, item, at, out);
        else checkScalar(parent, field, [item], at, out);
      });
      return;
    case "map":
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        out.push({ field: path, description: `expected an object, got ${quote(value)}` });
        return;
      }
      for (const [key, item] of Object.entries(value)) {
        const at = join(path, key);
        if (field.mapKind === "message") walkMessage(field.message, item, at, out);
        else if (field.mapKind === "enum") checkEnum(field.enum.values, item, at, out);
      }
      if (field.mapKind === "scalar") checkScalar(parent, field, value, path, out);
      return;
  }
}

function checkEnum(
  values: readonly { name: string; number: number }[],
  value: unknown,
  path: string,
  out: FieldViolation[],
) {
  if (typeof value === "number" && Number.isInteger(value)) return; // ranges: the RPC's own check
  if (typeof value === "string" && values.some((v) => v.name === value)) return;
  const names = values.filter((v) => v.number !== 0).map((v) => v.name);
  out.push({
    field: path,
    description: `${quote(value)} is not a value of this field; expected one of ${names.join(", ")}`,
    reason: "UNKNOWN_ENUM_VALUE",
  });
}

/** A scalar (or a scalar list or map) decoded on its own: protobuf-es says what is wrong. */
function checkScalar(
  parent: DescMessage,
  field: DescField,
  value: unknown,
  path: string,
  out: FieldViolation[],
) {
  try {
    fromJson(parent, { [field.jsonName]: value } as JsonValue);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    out.push({ field: path, description: message.replace(/^.* from JSON: /, "") });
  }
}

function checkWhole(desc: DescMessage, json: unknown, path: string, out: FieldViolation[]) {
  try {
    fromJson(desc, json as JsonValue);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    out.push({ field: path, description: message.replace(/^.* from JSON: /, "") });
  }
}

const join = (path: string, key: string) => (path === "" ? key : `${path}.${key}`);
