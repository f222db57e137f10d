// One phase of the imageId flow, driven by the TypeScript MCP SDK
// (@modelcontextprotocol/client 2.x, pinned in scripts/lib/npm-tools/).
// Run by scripts/checks/sdk_clients.sh on the Node 22 that npm-tools installs.
//
//   node ts_client.mjs generate URL OUT.json   generate_image; writes {imageId, sha256, protocol}
//   node ts_client.mjs continue URL IN.json    continue_editing by imageId, get_last_image_info,
//                                              continue_editing without imageId (must be refused)
//
// Env: NPM_TOOLS (the npm-tools install folder, where the SDK is), SDK_TOKEN
// (bearer token, sent through the transport's requestInit headers),
// SDK_NEGOTIATION (`auto`: versionNegotiation {mode: 'auto'}, which probes
// server/discover; `default`: no versionNegotiation option at all, which in
// this SDK means the 2025 initialize handshake), SDK_EXPECT_PROTOCOL (the
// version the negotiation must end on), SDK_PROMPT_TAG (a word added to the
// generate prompt), SDK_EXPECT_SHA256 (override the sha
// compared against, to prove the check fails when it should).
// Prints one JSON line on success; on a failed assertion prints
// `ts_client: FAILED: ...` to stderr and exits 1.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [phase, url, statePath] = process.argv.slice(2);
if (!['generate', 'continue'].includes(phase) || !url || !statePath) {
  console.error('usage: node ts_client.mjs generate|continue URL STATE.json');
  process.exit(2);
}
const npmTools = process.env.NPM_TOOLS;
if (!npmTools) {
  console.error('ts_client: NPM_TOOLS is not set (source scripts/lib/npm-tools.sh, ensure_npm_tools)');
  process.exit(2);
}

// Import the SDK from the npm-tools install by its package's own ESM entry
// (no NODE_PATH, no node_modules next to this file).
const pkgDir = join(npmTools, 'node_modules', '@modelcontextprotocol', 'client');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const sdk = await import(pathToFileURL(join(pkgDir, pkg.exports['.'].import.default)).href);
const { Client, StreamableHTTPClientTransport } = sdk;

const IMAGE_ID = /^img_[0-9a-f]{32}$/;

class CheckFailed extends Error {}

function ensure(cond, what, result) {
  if (!cond) {
    const detail = result === undefined ? '' : `\n--- result ---\n${JSON.stringify(result, null, 2).slice(0, 2000)}`;
    throw new CheckFailed(what + detail);
  }
}

const textOf = (r) => (r.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

function structured(r) {
  const s = r.structuredContent ?? JSON.parse(textOf(r));
  ensure(s && typeof s === 'object' && !Array.isArray(s), 'structuredContent is not an object', r);
  return s;
}

async function call(client, name, args, wantError = false) {
  const r = await client.callTool({ name, arguments: args });
  if (wantError) {
    ensure(r.isError === true, `${name} ${JSON.stringify(args)}: expected isError, got a result`, r);
  } else {
    ensure(r.isError !== true, `${name} ${JSON.stringify(args)}: isError: ${textOf(r).slice(0, 300)}`, r);
  }
  return r;
}

async function run() {
  const negotiation = process.env.SDK_NEGOTIATION || 'auto';
  const expect = process.env.SDK_EXPECT_PROTOCOL || '';
  const options = negotiation === 'default' ? {} : { versionNegotiation: { mode: negotiation } };
  const client = new Client({ name: 'nano-banana-sdk-check', version: '1.0.0' }, options);
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${process.env.SDK_TOKEN}` } },
  });
  await client.connect(transport, { timeout: 20000 });
  try {
    const protocol = client.getNegotiatedProtocolVersion();
    const era = client.getProtocolEra();
    ensure(!expect || protocol === expect, `negotiated protocol ${JSON.stringify(protocol)} (era ${era}), expected ${expect}`);
    const out = { phase, protocol, era, negotiation, sdk: `${pkg.name} ${pkg.version}` };

    if (phase === 'generate') {
      // The fake Gemini seeds its image from the prompt: a tag per run makes the sha unique.
      const prompt = `a red fox ${process.env.SDK_PROMPT_TAG || ''} fake:size=200000`;
      const r = await call(client, 'generate_image', { prompt });
      const s = structured(r);
      ensure(IMAGE_ID.test(String(s.imageId)), `imageId ${JSON.stringify(s.imageId)} is not img_ + 32 hex`, r);
      ensure(/^[0-9a-f]{64}$/.test(String(s.sha256)), 'no sha256 in the result', r);
      Object.assign(out, { imageId: s.imageId, sha256: s.sha256, path: s.path });
      writeFileSync(statePath, JSON.stringify(out));
      return out;
    }

    const state = JSON.parse(readFileSync(statePath, 'utf8'));
    const imageId = state.imageId;
    const sha = process.env.SDK_EXPECT_SHA256 || state.sha256;

    let r = await call(client, 'continue_editing', { imageId, prompt: 'add a hat fake:size=100000' });
    const edit = structured(r);
    ensure(edit.parentImageId === imageId,
      `continue_editing: parentImageId ${JSON.stringify(edit.parentImageId)}, expected ${imageId}`, r);
    ensure(IMAGE_ID.test(String(edit.imageId)) && edit.imageId !== imageId,
      `continue_editing: the edit's imageId ${JSON.stringify(edit.imageId)} is not a new id`, r);

    r = await call(client, 'get_last_image_info', { imageId });
    const image = structured(r).image || {};
    ensure(image.imageId === imageId, `get_last_image_info: image.imageId ${JSON.stringify(image.imageId)}, expected ${imageId}`, r);
    ensure(image.sha256 === sha, `get_last_image_info: image.sha256 ${JSON.stringify(image.sha256)}, expected ${sha}`, r);

    r = await call(client, 'continue_editing', { prompt: 'add a scarf fake:size=100000' }, true);
    ensure(textOf(r).includes('imageId'), 'continue_editing without imageId: the error does not mention imageId', r);

    Object.assign(out, { imageId, editId: edit.imageId });
    return out;
  } finally {
    await client.close().catch(() => {});
  }
}

const timer = setTimeout(() => {
  console.error(`ts_client: FAILED (${phase} on ${url}): no answer within 90 s`);
  process.exit(1);
}, 90000);
try {
  const out = await run();
  console.log(JSON.stringify(out));
  clearTimeout(timer);
} catch (e) {
  const what = e instanceof CheckFailed ? e.message : `${e?.name}: ${e?.message}\n${e?.stack ?? ''}`;
  console.error(`ts_client: FAILED (${phase} on ${url}): ${what}`);
  process.exit(1);
}
