import type { Interceptor } from "@connectrpc/connect";
import { requestMetaKey } from "../context-keys.js";
import { ipBucket } from "../domain/ip-bucket.js";
import { RateLimitedError } from "../errors.js";

/**
 * Caps the long-lived streams (Health/Watch, WatchRevocations) one client holds open: each
 * holds memory for as long as it lives, and HTTP/2 lets one connection carry many. Counted in
 * this instance's memory per client bucket (the X-Forwarded-For client behind a trusted
 * proxy, an IPv6 prefix, loopback as one); the stream over the cap is refused with
 * RESOURCE_EXHAUSTED before its handler runs.
 */
export function streamLimitInterceptor(options: {
  methods: ReadonlySet<string>;
  maxPerIp: number;
  ipv6PrefixLength: number;
}): Interceptor {
  const open = new Map<string, number>();
  return (next) => async (req) => {
    if (!options.methods.has(`${req.service.typeName}/${req.method.name}`)) return next(req);
    const client = req.contextValues.get(requestMetaKey).ipAddress ?? "unknown";
    const bucket = ipBucket(client, options.ipv6PrefixLength);
    const count = open.get(bucket) ?? 0;
    if (count >= options.maxPerIp) {
      throw new RateLimitedError(
        1_000,
        "RATE_LIMITED",
        "too many open streams from this address; close one before opening another",
      );
    }
    open.set(bucket, count + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      req.signal.removeEventListener("abort", release);
      const left = (open.get(bucket) ?? 1) - 1;
      if (left > 0) open.set(bucket, left);
      else open.delete(bucket);
    };
    // Whichever comes first: the stream ends, fails, or the client goes away.
    req.signal.addEventListener("abort", release, { once: true });
    try {
      const res = await next(req);
      if (!res.stream) {
        release();
        return res;
      }
      return { ...res, message: releasing(res.message, release) };
    } catch (error) {
      release();
      throw error;
    }
  };
}

async function* releasing<T>(messages: AsyncIterable<T>, release: () => void): AsyncIterable<T> {
  try {
    yield* messages;
  } finally {
    release();
  }
}
