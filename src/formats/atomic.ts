/**
 * Atomic file writes: write a temp file in the target's directory, fsync it, rename it over the target, fsync the directory.
 * A crash or error at any point leaves the previous target intact (POSIX rename(2) is atomic within one file system).
 * Pattern reference: https://lwn.net/Articles/457667/ ("ensuring data reaches disk").
 */
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Sequential writer handed to the callback of `writeFileAtomic`; tracks the byte position. */
export class FileSink {
  position = 0;
  constructor(readonly fd: number) {}
  write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.byteLength) {
      const n = writeSync(this.fd, bytes, done, bytes.byteLength - done, this.position + done);
      done += n;
    }
    this.position += bytes.byteLength;
  }
  /** Write `n` zero bytes (alignment padding). */
  pad(n: number): void {
    if (n > 0) this.write(new Uint8Array(n));
  }
}

function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; the rename itself is still atomic.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/** Whether process `pid` still runs (signal 0 only checks; EPERM means it exists under another user). */
export function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/**
 * Removes temp files of `name` in `dir` left by killed writers (`.NAME.PID[.HEX].tmp` whose PID no longer runs), so
 * interrupted runs do not pile up copies of big files.
 */
export function removeStaleTemps(dir: string, name: string): void {
  let entries: string[];
  try { entries = readdirSync(dir); } catch { return; }
  const prefix = `.${name}.`;
  for (const f of entries) {
    if (!f.startsWith(prefix) || !f.endsWith('.tmp')) continue;
    const pid = Number(f.slice(prefix.length).split('.')[0]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid)) rmSync(join(dir, f), { force: true });
  }
}

/** An I/O error that names the file (ENOSPC alone does not say where the disk filled up). */
function namedError(e: unknown, path: string): Error {
  const err = e as NodeJS.ErrnoException;
  if (!err?.code || err.message.includes(path)) return e as Error;
  const named = new Error(`cannot write ${path}: ${err.message}`) as NodeJS.ErrnoException;
  named.code = err.code;
  return named;
}

/**
 * Create or replace `path` atomically. `fill` streams the content into the sink; if it throws (or the disk fills up),
 * the temp file is removed, the target keeps its old content, and the error propagates.
 */
export function writeFileAtomic(path: string, fill: (sink: FileSink) => void): void {
  const dir = dirname(path);
  removeStaleTemps(dir, basename(path));
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number;
  try { fd = openSync(tmp, 'wx', 0o644); } catch (e) { throw namedError(e, path); }
  let ok = false;
  try {
    fill(new FileSink(fd));
    fsyncSync(fd);
    ok = true;
  } catch (e) {
    throw namedError(e, path);
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw namedError(e, path);
  }
  fsyncDir(dir);
}

/** Convenience: atomically write a whole buffer or string. */
export function writeBytesAtomic(path: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  writeFileAtomic(path, (sink) => sink.write(bytes));
}
