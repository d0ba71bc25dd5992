// The retry backoff (no server): exponential with full jitter, capped, and
// RetryInfo's delay as a floor under the jitter.
import assert from "node:assert/strict";
import { it } from "node:test";
import { backoffMs } from "../src/client.js";

const INITIAL = 100;
const MAX = 2000;
const SAMPLES = 400;

function sample(attempt: number, retryDelayMs?: number): number[] {
  return Array.from({ length: SAMPLES }, () => backoffMs(attempt, INITIAL, MAX, retryDelayMs));
}

it("grows with the attempt, spread over [0, bound], up to the cap", () => {
  const tops: number[] = [];
  for (let attempt = 1; attempt <= 6; attempt++) {
    const bound = Math.min(MAX, INITIAL * 2 ** (attempt - 1));
    const d = sample(attempt);
    assert.ok(d.every((x) => x >= 0 && x <= bound), `attempt ${attempt}: ${Math.max(...d)} > ${bound}`);
    assert.ok(Math.min(...d) < bound * 0.2 && Math.max(...d) > bound * 0.8, `attempt ${attempt}: not spread`);
    tops.push(Math.max(...d));
  }
  assert.deepEqual(tops, [...tops].sort((a, b) => a - b));
  assert.ok(tops[tops.length - 1] <= MAX);
});

it("RetryInfo's delay is a floor, jitter added above it", () => {
  for (let attempt = 1; attempt <= 6; attempt++) {
    const bound = Math.min(MAX, INITIAL * 2 ** (attempt - 1));
    const d = sample(attempt, 1000);
    assert.ok(d.every((x) => x >= 1000 && x <= 1000 + bound), `attempt ${attempt}`);
    assert.ok(new Set(d).size > 1 && Math.max(...d) - Math.min(...d) > bound * 0.6, `attempt ${attempt}: not spread`);
  }
});
