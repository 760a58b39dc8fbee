/** Shared pieces of the CLI: the command shape, option parsing helpers, formatting. */
import { accessSync, constants, existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { ParseArgsConfig } from 'node:util';

export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** A wrong flag or value: the command's usage is printed after the message, exit code 2. */
export class UsageError extends Error {}

export interface Command {
  summary: string;
  usage: string;
  options: Options;
  /** Takes arguments besides flags (paths, a prompt); without this a stray argument is a usage error. */
  positionals?: boolean;
  run(values: Values, positionals: string[]): Promise<void>;
}

export const threadsOption = { threads: { type: 'string' } } as const;

export function num(values: Values, key: string, fallback?: number): number | undefined {
  const v = values[key];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${key} expects a number, got ${JSON.stringify(v)}`);
  return n;
}

export function int(values: Values, key: string, fallback?: number): number | undefined {
  const n = num(values, key, fallback);
  if (n !== undefined && !Number.isInteger(n)) throw new UsageError(`--${key} expects an integer, got ${n}`);
  return n;
}

export function threads(values: Values): number | undefined {
  const t = int(values, 'threads');
  if (t !== undefined && t < 1) throw new UsageError('--threads must be at least 1');
  return t;
}

export function str(values: Values, key: string): string | undefined {
  const v = values[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`--${key} expects a value`);
  return v;
}

export function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}

/** A path made absolute with symlinks resolved, also for a path that does not exist yet (its parent resolved). */
function canonicalPath(p: string): string {
  const abs = path.resolve(p);
  try { return realpathSync(abs); } catch { /* not there yet */ }
  try { return path.join(realpathSync(path.dirname(abs)), path.basename(abs)); } catch { return abs; }
}

/**
 * Refuses an output that would overwrite the input model: the same path, the folder the input file sits in (a folder
 * output writes config.json and model.safetensors there), or an existing file inside the input folder. Called before
 * anything is written.
 */
export function checkOutputPath(input: string, out: string): void {
  const a = canonicalPath(input), b = canonicalPath(out);
  const inside = (x: string, dir: string) => x.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
  const inputIsFolder = existsSync(a) && statSync(a).isDirectory();
  if (a === b || path.dirname(a) === b || (inputIsFolder && existsSync(b) && inside(b, a))) {
    throw new UsageError(`--out ${out} would overwrite the input model ${input}; write somewhere else`);
  }
}

/** Fails early (before hours of work) when `file` could not be written: its folder is missing or read-only. */
export function checkWritable(file: string, flag: string): void {
  const dir = path.dirname(path.resolve(file));
  try { accessSync(dir, constants.W_OK); } catch { throw new UsageError(`--${flag} ${file}: folder ${dir} does not exist or is not writable`); }
}
