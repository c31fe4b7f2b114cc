// End-to-end check of berlin-server with the official `openai` npm package.
// Usage: node tests/server/openai_client.mjs BASE_URL API_KEY OPENAI_MODULE_DIR
// Prints one "ok ..." or "FAIL ..." line per check; exits 1 if any failed.
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const [baseURL, apiKey, modDir] = process.argv.slice(2);
const { default: OpenAI } = await import(pathToFileURL(join(modDir, 'openai', 'index.mjs')).href);
let failed = 0;
function check(cond, what, detail = '') {
  console.log(`${cond ? 'ok' : 'FAIL'} ${what}${detail ? ': ' + detail : ''}`);
  if (!cond) failed++;
}
async function step(what, fn) {
  try { await fn(); } catch (e) { check(false, what, `${e.constructor.name}: ${e.message}`); }
}

const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey, maxRetries: 0, timeout: 20000 });

await step('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  check(ids.length === 1 && typeof ids[0] === 'string', 'models.list', JSON.stringify(ids));
});

await step('chat.completions.create', async () => {
  const r = await client.chat.completions.create({
    model: 'stories260K', max_tokens: 24, temperature: 0,
    messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Once upon a time' }],
  });
  const c = r.choices[0];
  check(r.object === 'chat.completion' && c.message.role === 'assistant' && typeof c.message.content === 'string' &&
        ['stop', 'length'].includes(c.finish_reason) && r.usage.completion_tokens > 0 &&
        r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens,
        'chat.completions.create', JSON.stringify(c.message.content));
});

await step('chat.completions.create stream', async () => {
  const stream = await client.chat.completions.create({
    model: 'stories260K', max_completion_tokens: 24, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Tell me about a cat' }],
  });
  let text = '', chunks = 0, finish = null, usage = null, role = null;
  for await (const ch of stream) {
    chunks++;
    if (ch.usage) usage = ch.usage;
    const c = ch.choices[0];
    if (!c) continue;
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  check(chunks > 2 && role === 'assistant' && text.length > 0 && finish === 'length' && usage && usage.completion_tokens === 24,
        'chat stream', `${chunks} chunks, finish=${finish}, ${JSON.stringify(text)}`);
});

await step('completions.create', async () => {
  const r = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 16, seed: 7 });
  check(r.object === 'text_completion' && typeof r.choices[0].text === 'string' && r.choices[0].text.length > 0 &&
        r.usage.completion_tokens === 16, 'completions.create', JSON.stringify(r.choices[0].text));
});

await step('completions.create stream', async () => {
  const stream = await client.completions.create({ model: 'stories260K', prompt: 'The dog', max_tokens: 12, stream: true });
  let text = '', n = 0;
  for await (const ch of stream) { n++; text += ch.choices[0]?.text ?? ''; }
  check(n > 1 && text.length > 0, 'completions stream', `${n} chunks`);
});

await step('wrong key', async () => {
  const bad = new OpenAI({ baseURL: baseURL + '/v1', apiKey: apiKey + '-wrong', maxRetries: 0 });
  try {
    await bad.models.list();
    check(false, 'wrong key gets 401', 'no error thrown');
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key', 'wrong key gets 401',
          `${e.constructor.name} ${e.status} ${e.code}`);
  }
});

await step('bad request', async () => {
  try {
    await client.chat.completions.create({ model: 'stories260K', messages: [], max_tokens: 4 });
    check(false, 'empty messages gets 400', 'no error thrown');
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'messages', 'empty messages gets 400',
          `${e.constructor.name} ${e.status} ${e.param}`);
  }
});

console.log(`node openai client: ${failed ? failed + ' failed' : 'all ok'}`);
process.exit(failed ? 1 : 0);
