// Load the chat page in headless Chromium, type a message, wait for the
// streamed answer, save a screenshot. Driven over the DevTools protocol.
// Usage: node --experimental-websocket tests/server/chat_page.mjs BASE_URL API_KEY SCREENSHOT.png
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [baseURL, apiKey, shot] = process.argv.slice(2);
const browserBin = process.env.CHROMIUM || 'chromium';
const profile = mkdtempSync(join(tmpdir(), 'berlin-chromium-'));
const chrome = spawn(browserBin, ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-extensions',
  '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', `--user-data-dir=${profile}`,
  '--window-size=900,700', 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });
let failed = 0;
function check(cond, what, detail = '') {
  console.log(`${cond ? 'ok' : 'FAIL'} ${what}${detail ? ': ' + detail : ''}`);
  if (!cond) failed++;
}
const sleep = ms => new Promise(r => setTimeout(r, ms));
const deadline = setTimeout(() => { console.log('FAIL chat page: timed out'); finish(1); }, 40000);
function finish(code) {
  clearTimeout(deadline);
  try { chrome.kill('SIGTERM'); } catch (e) { /* already gone */ }
  setTimeout(() => { try { rmSync(profile, { recursive: true, force: true }); } catch (e) { /* best effort */ } process.exit(code); }, 300);
}

try {
  // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..." on stderr.
  const port = await new Promise((resolve, reject) => {
    let err = '';
    chrome.stderr.on('data', d => {
      err += d;
      const m = err.match(/DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) resolve(m[1]);
    });
    chrome.on('exit', c => reject(new Error('chromium exited with ' + c + ': ' + err.slice(-400))));
  });
  const pages = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const page = pages.find(p => p.type === 'page');
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
  let next = 1;
  const waiting = new Map();
  ws.onmessage = ev => {
    const msg = JSON.parse(ev.data);
    if (msg.id && waiting.has(msg.id)) { waiting.get(msg.id)(msg); waiting.delete(msg.id); }
  };
  const send = (method, params = {}) => new Promise((res, rej) => {
    const id = next++;
    waiting.set(id, m => (m.error ? rej(new Error(method + ': ' + m.error.message)) : res(m.result)));
    ws.send(JSON.stringify({ id, method, params }));
  });
  const evaluate = async expr => (await send('Runtime.evaluate', { expression: expr, returnByValue: true })).result.value;

  await send('Page.enable');
  await send('Runtime.enable');
  await send('Page.navigate', { url: baseURL + '/' });
  for (let i = 0; i < 100 && (await evaluate('document.readyState')) !== 'complete'; i++) await sleep(50);
  const title = await evaluate('document.title');
  check(title === 'berlin chat', 'page loads', JSON.stringify(title));
  // Type the key and the message the way a user would: focus, insert text, press Enter.
  await evaluate("document.getElementById('key').focus()");
  await send('Input.insertText', { text: apiKey });
  await evaluate("document.getElementById('input').focus()");
  await send('Input.insertText', { text: 'Tell me a story about a dog' });
  const enter = { key: 'Enter', code: 'Enter', windowsVirtualKeyCode: 13, nativeVirtualKeyCode: 13 };
  await send('Input.dispatchKeyEvent', { type: 'keyDown', ...enter });
  await send('Input.dispatchKeyEvent', { type: 'keyUp', ...enter });
  let state = null;
  for (let i = 0; i < 200; i++) {
    state = await evaluate(`(() => { const b = document.querySelector('.msg.assistant');
      return b ? { done: b.dataset.done, chunks: +(b.dataset.chunks || 0), text: b.querySelector('.text').textContent,
                   user: (document.querySelector('.msg.user .text') || {}).textContent } : null; })()`);
    if (state && state.done === '1') break;
    await sleep(50);
  }
  check(state && state.user === 'Tell me a story about a dog', 'typed message shown', JSON.stringify(state && state.user));
  check(state && state.done === '1' && state.chunks > 1 && state.text.length > 0 && !state.text.includes('[error'),
        'streamed answer', state ? `${state.chunks} chunks: ${JSON.stringify(state.text.slice(0, 80))}` : 'no answer');
  const png = await send('Page.captureScreenshot', { format: 'png' });
  writeFileSync(shot, Buffer.from(png.data, 'base64'));
  check(true, 'screenshot saved', shot);
  ws.close();
} catch (e) {
  check(false, 'chat page', e.message);
}
console.log(`chat page: ${failed ? failed + ' failed' : 'all ok'}`);
finish(failed ? 1 : 0);
