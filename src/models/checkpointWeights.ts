/** A WeightSource that reads a checkpoint lazily: each tensor is read (and converted to f32) only while it is written. */
import { numel } from '../formats/tensor.js';
import { writeAsF32 } from '../graph/index.js';
import type { Checkpoint } from './checkpoint.js';
import type { WeightSource } from './llamaGraph.js';
import { validateLlamaTensors, WeightError } from './llamaWeights.js';

/** The checkpoint must stay open until the graph has been written (e.g. until the session is created). */
export function checkpointWeights(ckpt: Checkpoint): WeightSource {
  // Stored quantized types (GGUF blocks, llama2.c int8) come out of getTensor as f32: validate names and shapes only.
  const asRead = (dtype: string) => (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16' ? dtype : 'f32');
  validateLlamaTensors(ckpt.config, new Map(ckpt.tensorNames().map((n) => {
    const info = ckpt.tensorInfo(n);
    return [n, { dtype: asRead(info.dtype), shape: info.shape }];
  })));
  return {
    tensor: (g, name, shape) => g.initializer(name, 'f32', shape, {
      byteLength: numel(shape) * 4,
      write(dst) {
        const t = ckpt.getTensor(name);
        if (t.dtype !== 'f32' && t.dtype !== 'f16' && t.dtype !== 'bf16') throw new WeightError(`${ckpt.path}: ${name} has dtype ${t.dtype}`);
        writeAsF32(t.dtype, t.data, dst);
      },
    }),
  };
}
