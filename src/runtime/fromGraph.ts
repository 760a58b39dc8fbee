/** Graph → ORT session through files: weights as page-aligned ONNX external data that ORT memory-maps. */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeOnnxWithExternalData, type Graph, type LowerOptions } from '../graph/index.js';
import { processAlive } from '../formats/atomic.js';
import { collectGarbage } from './memory.js';
import { Session, type SessionOptions } from './session.js';

/** Session folders of processes that no longer run (killed while loading). */
function removeStaleSessionDirs(root: string): void {
  let entries: string[];
  try { entries = readdirSync(root); } catch { return; }
  for (const f of entries) {
    const m = /^slimlm-session-(\d+)-/.exec(f);
    if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) rmSync(path.join(root, f), { recursive: true, force: true });
  }
}

/**
 * The weights are written once (streamed tensor by tensor from their sources) and mapped by ORT, so the process
 * never holds a second copy. The files are unlinked right after loading: the mapping keeps the data alive.
 * `SLIMLM_TMPDIR` (default: the OS temp dir) chooses where they go.
 */
export async function sessionFromGraph(graph: Graph, opts: SessionOptions & { lower?: LowerOptions } = {}): Promise<Session> {
  const root = process.env.SLIMLM_TMPDIR ?? os.tmpdir();
  removeStaleSessionDirs(root);
  // The PID in the name lets a later run remove the folder of a killed one.
  const dir = mkdtempSync(path.join(root, `slimlm-session-${process.pid}-`));
  try {
    const modelPath = path.join(dir, 'model.onnx');
    try {
      writeOnnxWithExternalData(graph, modelPath, opts.lower);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EFBIG' || code === 'EDQUOT') {
        throw new Error(`no room in ${root} for the model's weights file (${(e as Error).message}); point SLIMLM_TMPDIR at a folder with space`);
      }
      throw e;
    }
    // Writing leaves the tensors' JS copies as garbage (hundreds of MB for a 7B); V8 may not collect them before ORT
    // pre-packs the weights, the peak of loading, so they are freed now.
    collectGarbage();
    return await Session.create(modelPath, opts);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
