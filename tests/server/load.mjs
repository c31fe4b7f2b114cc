// Load figure for berlin-server: C concurrent streaming clients, each sending
// R requests one after another to /v1/completions; reports aggregate generated
// tokens per second (all clients, wall clock) and p50/p99 time to first token.
// Usage: node tests/server/load.mjs BASE_URL [--key KEY] [--clients 1,4,8]
//            [--requests R] [--max-tokens N] [--prompt TEXT]
const args = process.argv.slice(2);
const base = args[0];
const opt = (name, dflt) => { const i = args.indexOf('--' + name); return i >= 0 ? args[i + 1] : dflt; };
const key = opt('key', '');
const levels = opt('clients', '1,4,8').split(',').map(Number);
const perClient = Number(opt('requests', '4'));
const maxTokens = Number(opt('max-tokens', '128'));
const prompt = opt('prompt', 'Once upon a time');

async function one() {
  const t0 = performance.now();
  const headers = { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = 'Bearer ' + key;
  const r = await fetch(base + '/v1/completions', { method: 'POST', headers, body: JSON.stringify({
    prompt, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } }) });
  if (!r.ok) throw new Error('HTTP ' + r.status + ': ' + await r.text());
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = '', ttft = null, tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (ttft === null && j.choices.length && j.choices[0].text) ttft = performance.now() - t0;
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  return { ttft: ttft ?? performance.now() - t0, tokens, ms: performance.now() - t0 };
}

await one(); // warm-up: page in the weights, fill the caches
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]; };
console.log(`| clients | requests | tokens | wall s | aggregate tok/s | per-stream tok/s | TTFT p50 ms | TTFT p99 ms |`);
console.log(`|---|---|---|---|---|---|---|---|`);
for (const c of levels) {
  const results = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => { for (let k = 0; k < perClient; k++) results.push(await one()); }));
  const wall = (performance.now() - t0) / 1000;
  const tokens = results.reduce((a, r) => a + r.tokens, 0);
  const perStream = results.reduce((a, r) => a + r.tokens / (r.ms / 1000), 0) / results.length;
  console.log(`| ${c} | ${results.length} | ${tokens} | ${wall.toFixed(2)} | ${(tokens / wall).toFixed(1)} | ${perStream.toFixed(1)} | ` +
              `${pct(results.map(r => r.ttft), 50).toFixed(1)} | ${pct(results.map(r => r.ttft), 99).toFixed(1)} |`);
}
