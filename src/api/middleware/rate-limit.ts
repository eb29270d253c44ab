/**
 * Rate limit on creating requests, with the original's limits and messages, counted in the database
 * so every API process shares them: per principal per minute (RATE_LIMIT__REQUESTS_PER_MINUTE) and
 * per hour (…_PER_HOUR), and per client IP per minute (…_PER_IP_MINUTE). With auth disabled only
 * the IP limit applies, as in the original.
 *
 * Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds
 * until the window ends) for the tightest bucket; a 429 names the bucket that refused and carries
 * `Retry-After`.
 */
import type { MiddlewareHandler } from "hono";
import { ipBucket } from "../../auth/client-ip";
import { type Bucket, type BucketState, consume } from "../../auth/rate-limits";
import type { AppDeps, AppEnv } from "../app";
import { ApiError } from "../errors";

const secondsUntil = (t: number, now: number) => Math.max(1, Math.ceil((t - now) / 1000));

function headersFor(s: BucketState, now: number): Record<string, string> {
  return {
    "X-RateLimit-Limit": String(s.bucket.limit),
    "X-RateLimit-Remaining": String(s.remaining),
    "X-RateLimit-Reset": String(secondsUntil(s.resetAt, now)),
  };
}

export function rateLimitCreates(deps: Pick<AppDeps, "db" | "clock" | "config">): MiddlewareHandler<AppEnv> {
  const { db, clock, config } = deps;
  const rl = config.rateLimit;
  return async (c, next) => {
    if (!rl.enabled) return next();
    const principal = c.get("principal");
    const buckets: Bucket[] = [];
    if (principal?.id) {
      buckets.push(
        {
          name: `create:principal:${principal.id}:minute`,
          limit: rl.perMinute,
          windowMs: 60_000,
          message: "Rate limit exceeded: too many requests per minute",
        },
        {
          name: `create:principal:${principal.id}:hour`,
          limit: rl.perHour,
          windowMs: 3_600_000,
          message: "Rate limit exceeded: too many requests per hour",
        },
      );
    }
    buckets.push({
      name: `create:ip:${ipBucket(c.get("clientIp") ?? null)}:minute`,
      limit: rl.perIpMinute,
      windowMs: 60_000,
      message: "Rate limit exceeded: too many requests from IP",
    });
    const now = clock.now();
    const res = await consume(db, buckets, now);
    if (res.refusedBy) {
      const s = res.refusedBy;
      throw new ApiError(429, s.bucket.message, {
        ...headersFor(s, now),
        "Retry-After": String(secondsUntil(s.resetAt, now)),
      });
    }
    // The tightest bucket: fewest requests left (on a tie, the one that resets last).
    const tightest = res.states.reduce((a, b) =>
      b.remaining < a.remaining || (b.remaining === a.remaining && b.resetAt > a.resetAt) ? b : a,
    );
    for (const [k, v] of Object.entries(headersFor(tightest, now))) c.header(k, v);
    return next();
  };
}
