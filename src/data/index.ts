/** Data pipeline: files (text, JSONL, CSV, Parquet) → tokenized rows → deterministic, resumable `TokenBatch`es. */
export { parseCsv, csvObjects, CsvError } from './csv.js';
export { readExamples, detectFormat, DataError, type Example, type ChatMessage, type ReadOptions, type ReadResult, type DataFormat } from './readers.js';
export { ChatRenderer, DEFAULT_CHAT_TEMPLATE } from './chat.js';
export {
  loadData, tokenizeExamples, splitExamples, makeBatch, rowKey, dataFingerprint, describeStats, TokenDataset,
  type DataOptions, type TokenizeOptions, type TokenRow, type DataStats, type LoadedData,
} from './dataset.js';
export { ShuffleRng, permutation } from './rng.js';
