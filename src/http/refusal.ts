import type { ServerResponse } from "node:http";
import { Code } from "@connectrpc/connect";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

/** Connect's JSON name of a code ("resource_exhausted"). */
const codeName = (code: Code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

/**
 * A request refused before any RPC machinery could take it, answered so each client reads
 * the code: gRPC and gRPC-Web get a trailers-only answer with grpc-status, Connect and plain
 * HTTP the status connect-es gives the code and a Connect error body.
 */
export function refuse(
  req: NodeServerRequest,
  response: NodeServerResponse,
  code: Code,
  message: string,
): void {
  // Both have the same writeHead and end; TypeScript cannot call the union's overloads.
  const res = response as ServerResponse;
  const type = String(req.headers["content-type"] ?? "");
  if (type.startsWith("application/grpc")) {
    res.writeHead(200, {
      "content-type": type,
      "grpc-status": String(code),
      "grpc-message": encodeURIComponent(message),
    });
    res.end();
    return;
  }
  const body = JSON.stringify({ code: codeName(code), message });
  res.writeHead(codeToHttpStatus(code), {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
  });
  res.end(body);
}
