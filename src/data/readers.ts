/**
 * Dataset readers: every file becomes a list of `Example`s (plain text or a chat), the unit the tokenizer stage consumes.
 * Formats: plain text (one example per line, or per blank-line-separated document), JSON Lines (https://jsonlines.org),
 * CSV with a header row (RFC 4180, see csv.ts), Apache Parquet (https://parquet.apache.org/docs/file-format/, read by hyparquet).
 * Rows are plain text (`text` field), chats (`messages: [{role, content}]`), or prompt/response pairs (e.g. ChatbotData's Q/A
 * columns) that become a two-turn chat whose prompt can be masked from the loss, as TRL does for prompt-completion data.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { csvObjects } from './csv.js';

export interface ChatMessage { role: string; content: string }

export type Example =
  | { kind: 'text'; text: string }
  /** `promptCompletion`: built from a prompt/response pair (its prompt is masked by default). */
  | { kind: 'chat'; messages: ChatMessage[]; promptCompletion: boolean };

export type DataFormat = 'text' | 'jsonl' | 'csv' | 'parquet';

export interface ReadOptions {
  /** Default: from the extension (.txt/.raw/.md → text, .jsonl/.ndjson/.json → jsonl, .csv/.tsv → csv, .parquet → parquet). */
  format?: DataFormat;
  /** Plain text: one example per line (default) or per document (blocks separated by blank lines). */
  textUnit?: 'line' | 'document';
  /** Column/field holding plain text (default "text"). */
  textField?: string;
  /** Field holding a chat as [{role, content}] (default "messages"). */
  messagesField?: string;
  /** Prompt and response columns; default: the first pair present of Q/A, question/answer, prompt/completion, prompt/response, instruction/output. */
  promptField?: string;
  responseField?: string;
  /** System message put before every chat built from a prompt/response pair. */
  systemPrompt?: string;
}

export class DataError extends Error {}

export interface ReadResult {
  examples: Example[];
  /** Records read (lines, documents, JSON objects, CSV/Parquet rows). */
  rowsRead: number;
  /** Records dropped because their text or a message was empty. */
  empty: number;
}

const PAIRS: [string, string][] = [['Q', 'A'], ['question', 'answer'], ['prompt', 'completion'], ['prompt', 'response'], ['instruction', 'output']];

export function detectFormat(path: string): DataFormat {
  const ext = extname(path).toLowerCase();
  if (['.txt', '.raw', '.md', '.text', ''].includes(ext)) return 'text';
  if (['.jsonl', '.ndjson', '.json'].includes(ext)) return 'jsonl';
  if (['.csv', '.tsv'].includes(ext)) return 'csv';
  if (ext === '.parquet') return 'parquet';
  throw new DataError(`${path}: unknown data format ${JSON.stringify(ext)}; pass format (text, jsonl, csv, parquet)`);
}

export async function readExamples(path: string, opts: ReadOptions = {}): Promise<ReadResult> {
  const format = opts.format ?? detectFormat(path);
  switch (format) {
    case 'text': return readText(path, opts);
    case 'jsonl': { const { records, lines } = readJsonl(path); return fromRecords(path, records, opts, lines && ((n) => `line ${lines[n]}`)); }
    case 'csv': {
      const text = readFileSync(path, 'utf8');
      return fromRecords(path, csvObjects(text, path, extname(path).toLowerCase() === '.tsv' ? '\t' : ',').rows, opts);
    }
    case 'parquet': return fromRecords(path, await readParquet(path), opts);
  }
}

function readText(path: string, opts: ReadOptions): ReadResult {
  const text = readFileSync(path, 'utf8').replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  const units = opts.textUnit === 'document' ? text.split(/\n(?:[ \t]*\n)+/) : text.split('\n');
  if (units.length > 0 && units[units.length - 1] === '') units.pop(); // the final line break ends the last line
  const examples: Example[] = [];
  let empty = 0;
  for (const u of units) {
    const t = opts.textUnit === 'document' ? u.replace(/^\n+|\n+$/g, '') : u;
    if (t.trim() === '') empty++;
    else examples.push({ kind: 'text', text: t });
  }
  return { examples, rowsRead: units.length, empty };
}

/** JSON Lines (or a .json array) as records; `lines` gives each JSONL record's line number for messages. */
function readJsonl(path: string): { records: Record<string, unknown>[]; lines: number[] | null } {
  const text = readFileSync(path, 'utf8').replace(/^\uFEFF/, '');
  const isObject = (x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (extname(path).toLowerCase() === '.json' && /^\s*\[/.test(text)) {
    let arr: unknown;
    try { arr = JSON.parse(text); } catch (e) { throw new DataError(`${path}: invalid JSON (${(e as Error).message})`); }
    if (!Array.isArray(arr)) throw new DataError(`${path}: expected a JSON array of objects`);
    const bad = arr.findIndex((x) => !isObject(x));
    if (bad >= 0) throw new DataError(`${path}: item ${bad + 1} of the array is not an object`);
    return { records: arr as Record<string, unknown>[], lines: null };
  }
  const records: Record<string, unknown>[] = [], lines: number[] = [];
  text.split('\n').forEach((line, n) => {
    if (line.trim() === '') return;
    let rec: unknown;
    try { rec = JSON.parse(line); } catch (e) { throw new DataError(`${path}: line ${n + 1}: invalid JSON (${(e as Error).message})`); }
    if (!isObject(rec)) throw new DataError(`${path}: line ${n + 1} is not a JSON object`);
    records.push(rec as Record<string, unknown>);
    lines.push(n + 1);
  });
  return { records, lines };
}

async function readParquet(path: string): Promise<Record<string, unknown>[]> {
  try {
    return await parquetReadObjects({ file: await asyncBufferFromFile(path), utf8: true });
  } catch (e) {
    throw new DataError(`${path}: cannot read Parquet: ${(e as Error).message}`);
  }
}

type FieldPlan = { kind: 'text'; field: string } | { kind: 'messages'; field: string } | { kind: 'pair'; prompt: string; response: string };

function planFields(path: string, first: Record<string, unknown>, opts: ReadOptions): FieldPlan {
  if (opts.promptField || opts.responseField) {
    if (!opts.promptField || !opts.responseField) throw new DataError(`${path}: give both a prompt and a response field`);
    return { kind: 'pair', prompt: opts.promptField, response: opts.responseField };
  }
  if (opts.textField) return { kind: 'text', field: opts.textField };
  if (opts.messagesField) return { kind: 'messages', field: opts.messagesField };
  if ('messages' in first) return { kind: 'messages', field: 'messages' };
  if ('text' in first) return { kind: 'text', field: 'text' };
  const pair = PAIRS.find(([p, r]) => p in first && r in first);
  if (pair) return { kind: 'pair', prompt: pair[0], response: pair[1] };
  throw new DataError(`${path}: no "text", "messages" or prompt/response fields (${PAIRS.map((p) => p.join('/')).join(', ')}) among ${JSON.stringify(Object.keys(first))}; name the field to use`);
}

function fromRecords(path: string, records: Record<string, unknown>[], opts: ReadOptions, where: ((n: number) => string) | null = null): ReadResult {
  const at = where ?? ((n: number) => `row ${n + 1}`);
  const examples: Example[] = [];
  let empty = 0;
  if (records.length === 0) return { examples, rowsRead: 0, empty };
  const plan = planFields(path, records[0], opts);
  const str = (v: unknown, field: string, n: number): string => {
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
    throw new DataError(`${path}: ${at(n)}: field "${field}" is not text`);
  };
  records.forEach((rec, n) => {
    if (!rec || typeof rec !== 'object') throw new DataError(`${path}: ${at(n)} is not an object`);
    let ex: Example;
    if (plan.kind === 'text') {
      if (!(plan.field in rec)) throw new DataError(`${path}: ${at(n)} has no field "${plan.field}"`);
      ex = { kind: 'text', text: str(rec[plan.field], plan.field, n) };
    } else if (plan.kind === 'pair') {
      const messages = [
        ...(opts.systemPrompt ? [{ role: 'system', content: opts.systemPrompt }] : []),
        { role: 'user', content: str(rec[plan.prompt], plan.prompt, n) },
        { role: 'assistant', content: str(rec[plan.response], plan.response, n) },
      ];
      ex = { kind: 'chat', messages, promptCompletion: true };
    } else {
      const raw = rec[plan.field];
      if (!Array.isArray(raw)) throw new DataError(`${path}: ${at(n)}: "${plan.field}" must be an array of {role, content}`);
      const messages = raw.map((m, k) => {
        if (!m || typeof m !== 'object' || typeof (m as ChatMessage).role !== 'string') {
          throw new DataError(`${path}: ${at(n)}: message ${k} must be {role, content}`);
        }
        return { role: (m as ChatMessage).role, content: str((m as ChatMessage).content, 'content', n) };
      });
      ex = { kind: 'chat', messages, promptCompletion: false };
    }
    const isEmpty = ex.kind === 'text' ? ex.text.trim() === '' : ex.messages.length === 0 || ex.messages.some((m) => m.content.trim() === '');
    if (isEmpty) empty++;
    else examples.push(ex);
  });
  return { examples, rowsRead: records.length, empty };
}
