/**
 * CSV per RFC 4180 (https://www.rfc-editor.org/rfc/rfc4180): fields separated by commas, records by CRLF (LF and lone CR
 * accepted too); a field in double quotes may hold commas, line breaks and "" for a quote. A UTF-8 BOM is skipped.
 * A quote inside an unquoted field is kept as text, as Python's csv module and pandas read it (common in TSV files).
 */
export class CsvError extends Error {}

/** Parse CSV text into records (arrays of fields). Blank lines and a final line break do not make records. */
export function parseCsv(text: string, source = 'csv', delimiter = ','): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let field = '';
  let atFieldStart = true;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  const isBreak = (ch: string | undefined) => ch === '\n' || ch === '\r';
  while (i < text.length) {
    const c = text[i];
    if (c === '"' && atFieldStart) {
      // Quoted field: runs to the next quote that is not doubled.
      const startLine = line;
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) throw new CsvError(`${source}: line ${startLine}: unterminated quoted field`);
        for (let k = i; k < q; k++) if (text.charCodeAt(k) === 10) line++;
        field += text.slice(i, q);
        if (text[q + 1] === '"') { field += '"'; i = q + 2; continue; }
        i = q + 1;
        break;
      }
      if (i < text.length && text[i] !== delimiter && !isBreak(text[i])) {
        throw new CsvError(`${source}: line ${line}: unexpected ${JSON.stringify(text[i])} after a closing quote`);
      }
      atFieldStart = false;
      continue;
    }
    if (c === delimiter) { record.push(field); field = ''; atFieldStart = true; i++; continue; }
    if (isBreak(c)) {
      // A blank line (no field begun) is skipped, as Python's csv module and pandas do.
      if (record.length > 0 || !atFieldStart) { record.push(field); records.push(record); }
      record = []; field = ''; atFieldStart = true;
      i += c === '\r' && text[i + 1] === '\n' ? 2 : 1;
      line++;
      continue;
    }
    let j = i;
    while (j < text.length && text[j] !== delimiter && !isBreak(text[j])) j++;
    const run = text.slice(i, j);
    field += run;
    atFieldStart = false;
    i = j;
  }
  if (record.length > 0 || !atFieldStart) { record.push(field); records.push(record); }
  return records;
}

/** Records with a header row → objects keyed by column name; every record must have the header's field count. */
export function csvObjects(text: string, source = 'csv', delimiter = ','): { columns: string[]; rows: Record<string, string>[] } {
  const [header, ...records] = parseCsv(text, source, delimiter);
  if (!header) return { columns: [], rows: [] };
  const columns = header.map((h) => h.trim());
  const rows = records.map((r, n) => {
    if (r.length !== columns.length) {
      throw new CsvError(`${source}: row ${n + 1} after the header has ${r.length} fields, the header has ${columns.length}`);
    }
    return Object.fromEntries(columns.map((c, k) => [c, r[k]]));
  });
  return { columns, rows };
}
