import { describe, expect, it } from "vitest";
import { NodeRequestHeaders } from "../src/http/node-headers.js";

/**
 * The fast lane's view of a request's headers reads Node's header object without copying it;
 * what it answers must be what the Headers connect-node builds from the same object answers
 * (pseudo-headers left out, each value of a repeated header appended).
 */
const source = {
  ":path": "/keygate.v1.TokenIntrospectionService/Introspect",
  ":method": "POST",
  authorization: "Bearer kg_secret",
  "content-type": "application/grpc",
  "x-forwarded-for": "203.0.113.7, 10.0.0.1",
  "set-cookie": ["a=1", "b=2"],
  "x-empty": "",
};

function asConnectNodeBuildsIt(headers: Record<string, string | string[] | undefined>) {
  const out = new Headers();
  for (const [k, v] of Object.entries(headers)) {
    if (k.startsWith(":") || v === undefined) continue;
    for (const each of Array.isArray(v) ? v : [v]) out.append(k, each);
  }
  return out;
}

const entries = (h: Headers) => {
  const out: [string, string][] = [];
  h.forEach((v, k) => {
    out.push([k, v]);
  });
  return out;
};

describe("NodeRequestHeaders", () => {
  it("answers get, has and iteration as connect-node's Headers does", () => {
    const view = new NodeRequestHeaders(source);
    const expected = asConnectNodeBuildsIt(source);
    for (const name of [
      "authorization",
      "Authorization",
      "CONTENT-TYPE",
      "x-forwarded-for",
      "set-cookie",
      "x-empty",
      "missing",
    ]) {
      expect(view.get(name), name).toBe(expected.get(name));
      expect(view.has(name), name).toBe(expected.has(name));
    }
    expect(entries(view)).toEqual(entries(expected));
    expect([...(view as unknown as Iterable<[string, string]>)]).toEqual(entries(expected));
    expect(view.getSetCookie()).toEqual(["a=1", "b=2"]);
    expect(new Headers(view).get("authorization")).toBe("Bearer kg_secret");
  });

  it("reads only the object's own headers (HTTP/1.1's has Object's prototype)", () => {
    const view = new NodeRequestHeaders({ ...source });
    for (const name of ["constructor", "toString", "hasOwnProperty", "__proto__"]) {
      expect(view.get(name), name).toBeNull();
      expect(view.has(name), name).toBe(false);
    }
    expect(new NodeRequestHeaders({ constructor: "sent" }).get("constructor")).toBe("sent");
  });

  it("refuses a name Headers refuses", () => {
    const view = new NodeRequestHeaders(source);
    for (const name of ["bad name", ":path"]) {
      expect(() => new Headers().get(name)).toThrow(TypeError);
      expect(() => view.get(name)).toThrow(TypeError);
    }
  });

  it("keeps writes to itself, never to Node's object", () => {
    const node = { ...source };
    const view = new NodeRequestHeaders(node);
    view.set("authorization", "Bearer other");
    view.append("x-added", "1");
    view.delete("content-type");
    expect(view.get("authorization")).toBe("Bearer other");
    expect(view.get("x-added")).toBe("1");
    expect(view.has("content-type")).toBe(false);
    expect(node).toEqual(source);
  });
});
