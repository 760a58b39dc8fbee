#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in dist/ (built by `npm ci` via the prepare script, or `npm run build`).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('slimlm: dist/ is missing; run `npm run build` first\n');
  process.exit(1);
}
const args = process.argv.slice(2);
const { TRAINING_MALLOC_TUNABLES, mallocTuned } = await import(new URL('../dist/runtime/memory.js', import.meta.url).href);
const glibc = () => process.platform === 'linux' && Boolean(process.report?.getReport().header.glibcVersionRuntime);
if (['train', 'distill'].includes(args[0]) && !mallocTuned() && process.env.SLIMLM_MALLOC !== 'default' && glibc()) {
  // Training runs faster with malloc keeping freed memory (see TRAINING_MALLOC_TUNABLES); glibc reads that setting
  // only at start, so run again with it. Signals are passed on; the exit code and signal are passed back.
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env: { ...process.env, GLIBC_TUNABLES: TRAINING_MALLOC_TUNABLES },
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (!signal) process.exit(code ?? 1);
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  });
} else {
  if (process.send) { // started by the launcher above: stop if it dies (even by SIGKILL), never run on as an orphan
    const orphaned = () => process.kill(process.pid, 'SIGKILL');
    process.on('disconnect', orphaned);
    if (!process.connected) orphaned(); // it died before the listener existed
    process.channel?.unref();
  }
  const { main } = await import(entry.href);
  process.exitCode = await main(args);
}
