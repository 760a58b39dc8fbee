/** Graph → ORT session through files: weights as page-aligned ONNX external data that ORT memory-maps. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeOnnxWithExternalData, type Graph, type LowerOptions } from '../graph/index.js';
import { collectGarbage } from './memory.js';
import { Session, type SessionOptions } from './session.js';

/**
 * The weights are written once (streamed tensor by tensor from their sources) and mapped by ORT, so the process
 * never holds a second copy. The files are unlinked right after loading: the mapping keeps the data alive.
 * `SLIMLM_TMPDIR` (default: the OS temp dir) chooses where they go.
 */
export async function sessionFromGraph(graph: Graph, opts: SessionOptions & { lower?: LowerOptions } = {}): Promise<Session> {
  const dir = mkdtempSync(path.join(process.env.SLIMLM_TMPDIR ?? os.tmpdir(), 'slimlm-session-'));
  try {
    const modelPath = path.join(dir, 'model.onnx');
    writeOnnxWithExternalData(graph, modelPath, opts.lower);
    // Writing leaves the tensors' JS copies as garbage (hundreds of MB for a 7B); V8 may not collect them before ORT
    // pre-packs the weights, the peak of loading, so they are freed now.
    collectGarbage();
    return await Session.create(modelPath, opts);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
