import { type FieldViolation, InvalidArgumentError } from "../errors.js";
import { isMailboxAddress } from "../mail/address.js";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Controls (CR, LF, tab, NUL...), line and paragraph separators, format characters other
// than the zero-width joiner of emoji sequences, surrogates, private-use and unassigned
// code points.
const notPrintable = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]|(?!\u200d)\p{Cf}/u;
export const slugPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Collects field violations and throws them together, so a caller sees every problem at once. */
export class Violations {
  private readonly list: FieldViolation[] = [];

  add(field: string, description: string, reason?: string): this {
    this.list.push({ field, description, ...(reason ? { reason } : {}) });
    return this;
  }

  email(field: string, value: string): this {
    if (value.trim() === "") return this.add(field, "is required");
    // The grammar the outbox sends to (src/mail/address.ts): what passes here can be mailed.
    if (!isMailboxAddress(value.trim())) return this.add(field, "is not an email address");
    return this;
  }

  required(field: string, value: string, max = 4096): this {
    if (value === "") return this.add(field, "is required");
    if (value.length > max) return this.add(field, `is longer than ${max} characters`);
    return this;
  }

  /**
   * A display name such as a workspace's: required, at most `max` characters once trimmed,
   * and one line of printable text. It goes into mail and pages as it is, so no line breaks,
   * no other control characters, and no format characters (bidi overrides, zero-width marks)
   * that would make it read as something else.
   */
  displayName(field: string, value: string, max = 200): this {
    const trimmed = value.trim();
    if (trimmed === "") return this.add(field, "is required");
    if (trimmed.length > max) return this.add(field, `is longer than ${max} characters`);
    if (notPrintable.test(trimmed))
      return this.add(field, "must be one line of printable text (no control characters)");
    return this;
  }

  uuid(field: string, value: string): this {
    if (value !== "" && !uuidPattern.test(value)) this.add(field, "is not a valid id");
    return this;
  }

  throwIfAny(): void {
    if (this.list.length > 0) throw new InvalidArgumentError(this.list);
  }
}

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

/** One line of printable text (the rule of Violations.displayName, without the length). */
export function isDisplayName(value: string): boolean {
  return !notPrintable.test(value);
}
