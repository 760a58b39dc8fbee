/**
 * Token-embedding rows read from the checkpoint file with positional reads. A Gather in the graph would memory-map the
 * table, and on each new token the kernel maps a whole read-around window of it (~2 MB on the machines measured), so a
 * long generation ends up with most of a 7B's table resident; read rows sit in the page cache instead, outside the
 * process's RSS. Used for untied tables of quantized checkpoints (src/models/quantized.ts); the graph then takes
 * `inputs_embeds` (src/models/llamaGraph.ts).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { bf16ToF32, f16ToF32 } from '../formats/dtype.js';

export interface EmbeddingRows {
  /** f32 [ids.length × row width], the rows of `ids` in order. */
  lookup(ids: readonly number[]): Float32Array;
  close(): void;
}

export interface TableLocation { path: string; offset: number; dtype: 'f32' | 'f16' | 'bf16'; rows: number; cols: number }

export function fileEmbeddingRows({ path, offset, dtype, rows, cols }: TableLocation): EmbeddingRows {
  const width = dtype === 'f32' ? 4 : 2, rowBytes = cols * width;
  let fd: number | null = openSync(path, 'r');
  const row = new Uint8Array(rowBytes);
  const halves = new Uint16Array(row.buffer);
  return {
    lookup(ids) {
      if (fd === null) throw new Error(`${path}: embedding rows read after close()`);
      const out = new Float32Array(ids.length * cols);
      ids.forEach((id, i) => {
        if (!Number.isInteger(id) || id < 0 || id >= rows) throw new RangeError(`token id ${id} is outside the embedding table (${rows} rows)`);
        const n = readSync(fd!, row, 0, rowBytes, offset + id * rowBytes);
        if (n !== rowBytes) throw new Error(`${path}: embedding row ${id} is truncated (${n} of ${rowBytes} bytes)`);
        if (dtype === 'f32') out.set(new Float32Array(row.buffer), i * cols);
        else for (let j = 0; j < cols; j++) out[i * cols + j] = dtype === 'bf16' ? bf16ToF32(halves[j]) : f16ToF32(halves[j]);
      });
      return out;
    },
    close() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },
  };
}
