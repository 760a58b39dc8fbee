/** Peak memory of this process, as benchmarks and reports state it. */
import { readFileSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';

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

/**
 * glibc malloc settings for training processes (GLIBC_TUNABLES; read at process start only). Each training step
 * returns the whole optimizer state from onnxruntime as freshly allocated copies (the node binding copies every
 * output), hundreds of MB per step. With glibc's defaults those blocks are mmap'ed and unmapped each time, and every
 * page is faulted in again on the next step; keeping freed memory in the heap removes those faults (bench/train.ts).
 */
export const TRAINING_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184';

/** True when this process runs with glibc malloc settings of its own (GLIBC_TUNABLES naming malloc). */
export const mallocTuned = (): boolean => /glibc\.malloc\./.test(process.env.GLIBC_TUNABLES ?? '');

let fullGc: (() => void) | undefined;
/** A full V8 collection, also when node was started without --expose-gc. */
export function collectGarbage(): void {
  if (!fullGc) {
    fullGc = (globalThis as { gc?: () => void }).gc;
    if (!fullGc) {
      v8.setFlagsFromString('--expose-gc');
      fullGc = vm.runInNewContext('gc') as () => void;
      v8.setFlagsFromString('--no-expose-gc');
    }
  }
  fullGc();
}
