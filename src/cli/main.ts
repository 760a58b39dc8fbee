/** The `slimlm` command line: one binary, subcommands (one file each in ./commands). Results go to stdout, diagnostics to stderr. */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { UsageError, type Command } from './common.js';
import { exportCommand } from './commands/export.js';
import { evalCommand } from './commands/eval.js';
import { quantize } from './commands/quantize.js';
import { compare } from './commands/compare.js';
import { chat } from './commands/chat.js';
import { generate } from './commands/generate.js';
import { inspect } from './commands/inspect.js';
import { distill } from './commands/distill.js';
import { train } from './commands/train.js';
import { serve } from './commands/serve.js';
import { tokenize } from './commands/tokenize.js';
import { teacherCache } from './commands/teacher-cache.js';

const commands: Record<string, Command> = {
  generate,
  chat,
  serve,
  tokenize,
  inspect,
  distill,
  train,
  export: exportCommand,
  quantize,
  eval: evalCommand,
  compare,
  'teacher-cache': teacherCache,
};

function help(): string {
  const width = Math.max(...Object.keys(commands).map((k) => k.length));
  return [
    'slimlm — distill, quantize and run language models on CPU',
    '',
    'usage: slimlm <command> [options]    (slimlm <command> --help for details)',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    `cores here: ${os.availableParallelism()}`,
  ].join('\n');
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-v' || name === 'version') {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`slimlm ${pkg.version}\n`);
    return 0;
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name ? 0 : 1;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`slimlm: unknown command ${JSON.stringify(name)}\n\n${help()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.usage}\n`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    if (!cmd.positionals && positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])} (flags take --name VALUE)`);
    await cmd.run(values, positionals);
    return 0;
  } catch (err) {
    const raw = err instanceof Error ? err.message : String(err);
    const message = raw.startsWith(`${name}: `) ? raw.slice(name.length + 2) : raw; // no "slimlm generate: generate: …"
    const isUsage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`slimlm ${name}: ${message}\n`);
    if (isUsage) process.stderr.write(`\n${cmd.usage}\n`);
    if (process.env.SLIMLM_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return isUsage ? 2 : 1;
  }
}
