/** The web chat page end to end in headless Debian Chromium (playwright-core): a Korean message in, a streamed reply out. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { AutoModelForCausalLM, AutoTokenizer } from '../src/api.js';
import { chatFormat } from '../src/chat/index.js';
import { startServer } from '../src/serve/index.js';

const CHROMIUM = '/usr/bin/chromium';
const root = fileURLToPath(new URL('..', import.meta.url));
const modelPath = path.join(root, '../shared/models/stories260K/stories260K.bin');
const screenshot = path.join(os.tmpdir(), 'slimlm-chat-page.png');

const missing = !fs.existsSync(CHROMIUM) && `${CHROMIUM} is not installed (apt-get install chromium; .ci/run does this) — skipping the browser test`;

test('the chat page streams a reply to a Korean message in headless Chromium', { skip: missing, timeout: 60_000 }, async () => {
  const lm = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: 1 });
  const tokenizer = await AutoTokenizer.fromPretrained(modelPath);
  const server = await startServer({ model: lm.model, tokenizer, chat: chatFormat(tokenizer), modelId: 'stories260K', port: 0 });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 900, height: 640 },
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url + '/');
    await page.waitForFunction(() => document.getElementById('model')!.textContent!.startsWith('stories260K'), null, { timeout: 10_000 });

    // Count how often the reply bubble changes: a streamed reply grows in many steps.
    await page.evaluate(() => {
      const w = window as unknown as { updates: number };
      w.updates = 0;
      new MutationObserver(() => w.updates++).observe(document.getElementById('log')!, { subtree: true, childList: true, characterData: true });
    });
    const korean = '안녕하세요! 고양이에 대한 이야기를 들려주세요.';
    await page.fill('#input', korean);
    await page.press('#input', 'Enter');
    await page.waitForSelector('.assistant .stats', { timeout: 20_000 });

    assert.equal(await page.textContent('.msg.user'), korean);
    const reply = await page.$eval('.assistant', (el) => el.firstChild!.textContent ?? '');
    const stats = await page.textContent('.assistant .stats');
    assert.ok(reply.trim().length > 10, `a reply: ${JSON.stringify(reply)}`);
    assert.match(stats!, /first token \d+ ms · \d+ tokens · [\d.]+ tokens\/s/);
    assert.ok(await page.evaluate(() => (window as unknown as { updates: number }).updates) > 5, 'the reply streamed in');
    // The page keeps the conversation: the second request carries the first turn.
    await page.fill('#input', '고마워요');
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('.assistant .stats').length === 2, null, { timeout: 20_000 });
    assert.equal(await page.locator('.msg.user').count(), 2);
    assert.equal(await page.locator('.error').count(), 0, (await page.locator('.error').allTextContents()).join('\n'));
    assert.deepEqual(pageErrors, []);
    await page.screenshot({ path: screenshot });
  } finally {
    await context.close();
    await server.close();
    await lm.dispose();
    fs.rmSync(profile, { recursive: true, force: true });
  }
});
