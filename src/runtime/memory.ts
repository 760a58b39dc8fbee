/** Peak memory of this process, as benchmarks and reports state it. */
import { readFileSync } from 'node:fs';

/**
 * Peak resident set size in bytes: VmHWM of /proc/self/status where Linux has it. `getrusage`'s ru_maxrss (Node's
 * `process.resourceUsage().maxRSS`) also counts the parent's memory at fork time, so a small child spawned by a big
 * parent would report the parent's size.
 */
export function peakRssBytes(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return process.resourceUsage().maxRSS * 1024;
}
