import type { IncomingHttpHeaders } from "node:http";

/**
 * A request's headers as connect-node's nodeHeaderToWebHeader gives them (pseudo-headers left
 * out, repeated values joined as Headers joins appended ones), read straight from Node's
 * header object: `get` and `has` copy nothing. The first write or iteration makes a real
 * Headers copy, and everything from then on goes to it. Building a Headers per call (its
 * WebIDL checks of every name and value) was a tenth of a cached Introspect's cost.
 */
export class NodeRequestHeaders implements Headers {
  #copy: Headers | undefined;

  constructor(private readonly source: IncomingHttpHeaders) {}

  get(name: string): string | null {
    if (this.#copy || !plainName.test(name)) return this.headers().get(name);
    // HTTP/1.1's header object has Object's prototype: "constructor" is not a header.
    const value = this.source[name.toLowerCase()];
    if (typeof value === "string") return value;
    return Array.isArray(value) ? value.join(", ") : null;
  }

  has(name: string): boolean {
    return this.get(name) !== null;
  }

  set(name: string, value: string): void {
    this.headers().set(name, value);
  }

  append(name: string, value: string): void {
    this.headers().append(name, value);
  }

  delete(name: string): void {
    this.headers().delete(name);
  }

  getSetCookie(): string[] {
    return this.headers().getSetCookie();
  }

  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown) {
    this.headers().forEach((value, key) => {
      callback.call(thisArg, value, key, this);
    });
  }

  entries(): IterableIterator<[string, string]> {
    return this.iterable().entries();
  }

  keys(): IterableIterator<string> {
    return this.iterable().keys();
  }

  values(): IterableIterator<string> {
    return this.iterable().values();
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.iterable()[Symbol.iterator]();
  }

  get [Symbol.toStringTag]() {
    return "Headers";
  }

  /** The copy's iteration (Headers is iterable; the DOM library this builds with says less). */
  private iterable() {
    return this.headers() as unknown as {
      entries(): IterableIterator<[string, string]>;
      keys(): IterableIterator<string>;
      values(): IterableIterator<string>;
      [Symbol.iterator](): IterableIterator<[string, string]>;
    };
  }

  private headers(): Headers {
    if (this.#copy) return this.#copy;
    const copy = new Headers();
    for (const k of Object.keys(this.source)) {
      const v = this.source[k];
      if (k.startsWith(":") || v === undefined) continue;
      if (Array.isArray(v)) for (const each of v) copy.append(k, each);
      else copy.append(k, String(v));
    }
    this.#copy = copy;
    return copy;
  }
}

/** A header name Node's object holds as it is (lowercase token characters). */
const plainName = /^[A-Za-z0-9-]+$/;
