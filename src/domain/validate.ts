import { isMailboxAddress } from "../mail/address.js";
import { type FieldViolation, InvalidArgumentError } from "./errors.js";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
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
