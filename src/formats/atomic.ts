/**
 * Atomic file writes: write a temp file in the target's directory, fsync it, rename it over the target, fsync the directory.
 * A crash or error at any point leaves the previous target intact (POSIX rename(2) is atomic within one file system).
 * Pattern reference: https://lwn.net/Articles/457667/ ("ensuring data reaches disk").
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
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

/**
 * Create or replace `path` atomically. `fill` streams the content into the sink; if it throws (or the disk fills up),
 * the temp file is removed, the target keeps its old content, and the error propagates.
 */
export function writeFileAtomic(path: string, fill: (sink: FileSink) => void): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o644);
  let ok = false;
  try {
    fill(new FileSink(fd));
    fsyncSync(fd);
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dir);
}

/** Convenience: atomically write a whole buffer or string. */
export function writeBytesAtomic(path: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  writeFileAtomic(path, (sink) => sink.write(bytes));
}
