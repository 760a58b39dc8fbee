/**
 * The chat page served at `/`: one self-contained HTML file (no framework, no external requests) that streams replies
 * from /v1/chat/completions, keeps the conversation in memory, and shows time to first token and tokens/s.
 * Kept as a TS string so it ships inside dist/ with the compiled server.
 */
export const CHAT_PAGE_HTML = `<!doctype html>
<html lang="ko">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>slimlm chat</title>
<style>
  :root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --me: #dbeafe; --bot: #ffffff; --dim: #6b7280; --line: #e5e7eb; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e5e7eb; --bg: #111318; --me: #1e3a5f; --bot: #1b1e25; --dim: #9ca3af; --line: #2a2f3a; } }
  * { box-sizing: border-box; }
  body { margin: 0; height: 100vh; display: flex; flex-direction: column; color: var(--fg); background: var(--bg);
    font: 16px/1.55 system-ui, -apple-system, "Segoe UI", "Noto Sans KR", "Noto Sans CJK KR", "Apple SD Gothic Neo",
      "Malgun Gothic", "NanumGothic", "Source Han Sans KR", sans-serif; word-break: keep-all; overflow-wrap: anywhere; }
  header { display: flex; gap: .75rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1rem; margin: 0; }
  header .model { color: var(--dim); font-size: .85rem; flex: 1; }
  button { font: inherit; padding: .35rem .8rem; border-radius: .4rem; border: 1px solid var(--line); background: var(--bot); color: var(--fg); cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  #log { flex: 1; overflow-y: auto; padding: 1rem; display: flex; flex-direction: column; gap: .6rem; }
  .msg { max-width: 48rem; padding: .5rem .8rem; border-radius: .6rem; white-space: pre-wrap; border: 1px solid var(--line); }
  .user { align-self: flex-end; background: var(--me); }
  .assistant { align-self: flex-start; background: var(--bot); }
  .system { align-self: center; color: var(--dim); font-size: .85rem; }
  .stats { color: var(--dim); font-size: .8rem; margin-top: .25rem; }
  .error { color: #dc2626; }
  form { display: flex; gap: .5rem; padding: .75rem 1rem; border-top: 1px solid var(--line); }
  textarea { flex: 1; font: inherit; padding: .5rem; border-radius: .4rem; border: 1px solid var(--line); background: var(--bot); color: var(--fg); resize: none; }
</style>
</head>
<body>
<header>
  <h1>slimlm</h1><span class="model" id="model">…</span>
  <button type="button" id="reset">New chat</button>
</header>
<main id="log" aria-live="polite"></main>
<form id="form">
  <textarea id="input" rows="2" placeholder="메시지를 입력하세요 · Type a message (Enter to send, Shift+Enter for a new line)" autofocus></textarea>
  <button id="send" type="submit">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const log = $('log'), input = $('input'), send = $('send'), stop = $('stop');
let history = [];
let modelId = null;
let maxTokens = 256;
let controller = null;
let apiKey = localStorage.getItem('slimlm.apiKey') || '';

const headers = () => Object.assign({ 'Content-Type': 'application/json' }, apiKey ? { Authorization: 'Bearer ' + apiKey } : {});

function bubble(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function api(path, init) {
  for (;;) {
    const res = await fetch(path, Object.assign({ headers: headers() }, init));
    if (res.status !== 401) return res;
    const key = prompt('This server needs an API key:');
    if (!key) return res;
    apiKey = key;
    localStorage.setItem('slimlm.apiKey', key);
  }
}

async function loadModel() {
  try {
    const res = await api('/v1/models');
    const body = await res.json();
    modelId = body.data[0].id;
    if (body.data[0].context_length) maxTokens = Math.min(maxTokens, Math.floor(body.data[0].context_length / 2));
    $('model').textContent = modelId + ' · context ' + (body.data[0].context_length || '?') + ' tokens';
  } catch (e) {
    $('model').textContent = 'cannot reach the server: ' + e.message;
  }
}

async function ask(text) {
  history.push({ role: 'user', content: text });
  const mine = bubble('user', text);
  const out = bubble('assistant', '');
  const stats = document.createElement('div');
  stats.className = 'stats';
  controller = new AbortController();
  send.disabled = true; stop.disabled = false;
  const t0 = performance.now();
  let first = 0, reply = '', usage = null, finish = null;
  try {
    let res;
    for (;;) {
      res = await api('/v1/chat/completions', {
        method: 'POST', signal: controller.signal,
        body: JSON.stringify({ model: modelId, messages: history, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } }),
      });
      if (res.ok) break;
      const err = (await res.json().catch(() => ({}))).error || {};
      // Keep the conversation inside the context window: forget the oldest turn and ask again.
      if (err.code === 'context_length_exceeded' && history.length > 1) {
        history.splice(0, 2);
        log.insertBefore(bubble('system', '(the oldest turn was dropped to fit the context)'), mine);
        continue;
      }
      throw new Error(err.message || res.status + ' ' + res.statusText);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf('\\n\\n')) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = event.split('\\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
        if (!data || data === '[DONE]') continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        if (choice.finish_reason) finish = choice.finish_reason;
        const delta = choice.delta && choice.delta.content;
        if (delta) {
          if (!first) first = performance.now();
          reply += delta;
          out.textContent = reply;
          log.scrollTop = log.scrollHeight;
        }
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') { out.classList.add('error'); out.textContent = reply + (reply ? '\\n' : '') + '⚠ ' + e.message; }
    else finish = 'stopped';
  } finally {
    const end = performance.now();
    const tokens = usage ? usage.completion_tokens : 0;
    const rate = tokens > 1 && first ? ((tokens - 1) * 1000 / (end - first)).toFixed(1) : '–';
    stats.textContent = (first ? 'first token ' + Math.round(first - t0) + ' ms · ' : '') + tokens + ' tokens · ' + rate + ' tokens/s' + (finish ? ' · ' + finish : '');
    out.appendChild(stats);
    if (reply) history.push({ role: 'assistant', content: reply });
    else history.pop(); // keep user/assistant turns alternating
    controller = null;
    send.disabled = false; stop.disabled = true;
    input.focus();
  }
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = '';
  ask(text);
});
// Enter sends, but never while an IME (Korean, Japanese…) is still composing a character.
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); $('form').requestSubmit(); }
});
stop.addEventListener('click', () => controller && controller.abort());
$('reset').addEventListener('click', () => { if (controller) controller.abort(); history = []; log.textContent = ''; input.focus(); });
loadModel();
</script>
</body>
</html>
`;
