/** The Korean chatbot pipeline (examples/korean-chatbot) end to end in CI size: every step runs and the report is written. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

test('korean-chatbot pipeline (CI preset): teacher → KD and CE students → int4/NF4 → held-out eval → report', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-korean-'));
  const started = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'examples/korean-chatbot/run.ts'), '--preset', 'ci', '--out', out],
    { encoding: 'utf8', cwd: root, timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  assert.ok(Date.now() - started < 300_000, 'the CI-sized pipeline must finish in under 5 minutes');
  const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  for (const name of ['teacher', 'student (KD)', 'student (KD) int4', 'student (KD) NF4', 'student (CE only)']) {
    assert.match(report, new RegExp(`^\\| ${name.replace(/[()]/g, '\\$&')} \\|`, 'm'), name);
  }
  for (const cmd of ['slimlm train', 'slimlm distill', 'slimlm quantize']) assert.ok(report.includes(cmd), cmd);
  for (const svg of ['training-loss.svg', 'validation-ppl.svg', 'quality-vs-size.svg']) {
    assert.match(fs.readFileSync(path.join(out, svg), 'utf8'), /^<svg /);
  }
  const json = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
  const byDir = Object.fromEntries(json.rows.map((row: { dir: string }) => [row.dir, row]));
  // The teacher is its own reference; the student is ~1/10 of it and answers with 64 tokens.
  assert.equal(byDir.teacher.quality.meanKL, 0);
  assert.equal(byDir.teacher.quality.top1Agreement, 1);
  assert.ok(byDir['student-kd'].params < byDir.teacher.params / 5);
  for (const row of json.rows) {
    assert.ok(Number.isFinite(row.quality.perplexity) && row.quality.perplexity > 1, `${row.dir} perplexity`);
    assert.ok(row.speed.replyMs > 0 && row.speed.ttftMs > 0 && row.speed.ttftMs <= row.speed.replyMs, `${row.dir} timings`);
  }
  fs.rmSync(out, { recursive: true, force: true });
});
