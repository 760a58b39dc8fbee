/** Shared pieces of the CLI: the command shape, option parsing helpers, formatting. */
import type { ParseArgsConfig } from 'node:util';

export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** A wrong flag or value: the command's usage is printed after the message, exit code 2. */
export class UsageError extends Error {}

export interface Command {
  summary: string;
  usage: string;
  options: Options;
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
