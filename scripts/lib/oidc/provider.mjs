// A real OpenID provider for scripts/checks/oauth.sh: the npm package
// oidc-provider (pinned in scripts/lib/npm-tools/), on 127.0.0.1 only, with
// everything held in memory. Test-only; not part of the server.
//
//   node provider.mjs --resource URL --info-file PATH [--port N]
//        [--other-resource URL] [--ttl S] [--short-ttl S] [--max-lifetime S]
//
// Issuer: http://127.0.0.1:PORT (PORT 0 = the OS picks one). Once it listens
// it writes PATH (mode 0600, replaced atomically) with what a test needs:
//   {issuer, port, pid, generation, kid, jwks_uri, token_endpoint,
//    resource, other_resource, ttl, short_ttl,
//    clients: {full|read|short: {client_id, client_secret, scope}}}
//
// Access tokens are JWTs (RFC 9068, typ at+jwt) signed RS256 with a key made
// at start (never written anywhere), through the resource indicators feature:
//   --resource URL        the MCP endpoint; tokens for it carry aud = URL
//   --other-resource URL  a second resource server (aud = that URL), so a
//                         test can get a genuine token for another audience
// Any other `resource` is refused (invalid_target); a token request without
// one gets --resource.
//
// Clients:
//   full   client_credentials, images:generate images:edit images:read
//   read   client_credentials, images:read only (asking for more is
//          invalid_scope)
//   short  like full, but its access tokens live --short-ttl seconds
//          (default 2) instead of --ttl (default 600)
//   plus dynamic client registration (RFC 7591, open: loopback only) and the
//   authorization code flow with PKCE, whose login and consent pages are
//   oidc-provider's devInteractions (any login and password), so a script can
//   sign in by posting the two forms.
//
// Key rotation: SIGHUP replaces the signing key with a new one (new kid); the
// JWKS then lists only the new key, and the info file is rewritten with the
// next generation. Port, issuer and client secrets stay; dynamically
// registered clients and sessions are forgotten.
//
// SIGTERM / SIGINT end it; so does --max-lifetime (default 1800 s), so an
// orphan left by a killed test does not live on.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const SCOPES = ['images:generate', 'images:edit', 'images:read'];
const ALL = SCOPES.join(' ');

function fail(msg) {
  console.error(`oidc provider: ${msg}`);
  process.exit(2);
}

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    resource: { type: 'string' },
    'other-resource': { type: 'string' },
    'info-file': { type: 'string' },
    ttl: { type: 'string', default: '600' },
    'short-ttl': { type: 'string', default: '2' },
    'max-lifetime': { type: 'string', default: '1800' },
  },
  strict: true,
});
if (!opt.resource) fail('--resource URL is required');
if (!opt['info-file']) fail('--info-file PATH is required');
const int = (name) => {
  const n = Number(opt[name]);
  if (!Number.isInteger(n) || n < 0) fail(`--${name} must be a whole number, got ${opt[name]}`);
  return n;
};
const port = int('port');
const ttl = int('ttl');
const shortTtl = int('short-ttl');
const maxLifetime = int('max-lifetime');
if (ttl < 1 || shortTtl < 1) fail('token lifetimes must be at least 1 s');
const RESOURCE = new URL(opt.resource).href;
const OTHER = opt['other-resource'] ? new URL(opt['other-resource']).href : undefined;
if (RESOURCE !== opt.resource || (OTHER && OTHER !== opt['other-resource'])) {
  // The provider compares resource indicators as given; a URL that normalizes
  // differently (a missing slash after the host, upper-case host) would never match.
  fail(`resource URLs must be in normal form: ${opt.resource} → ${RESOURCE}`);
}

// oidc-provider lives in the npm-tools install (scripts/lib/npm-tools.sh).
const npmTools = process.env.NPM_TOOLS;
if (!npmTools) fail('NPM_TOOLS is not set (source scripts/lib/npm-tools.sh, ensure_npm_tools)');
const { default: Provider, errors } = await import(
  pathToFileURL(join(npmTools, 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const secret = () => randomBytes(24).toString('base64url');
const clients = {
  full: { client_id: 'nb-full', client_secret: secret(), scope: ALL },
  read: { client_id: 'nb-read', client_secret: secret(), scope: 'images:read' },
  short: { client_id: 'nb-short', client_secret: secret(), scope: ALL },
};
const byId = new Map(Object.values(clients).map((c) => [c.client_id, c]));
const cookieKeys = [secret()];

function newSigningKey(generation) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `gen${generation}-${randomBytes(6).toString('base64url')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

async function getResourceServerInfo(ctx, indicator, client) {
  let audience;
  if (indicator === RESOURCE) audience = RESOURCE;
  else if (OTHER && indicator === OTHER) audience = OTHER;
  else throw new errors.InvalidTarget(`unknown resource indicator ${indicator}`);
  const fixed = byId.get(client?.clientId);
  return {
    audience,
    scope: fixed ? fixed.scope : ALL,
    accessTokenFormat: 'jwt',
    accessTokenTTL: client?.clientId === clients.short.client_id ? shortTtl : ttl,
    jwt: { sign: { alg: 'RS256' } },
  };
}

function buildProvider(issuer, key) {
  const lifetime = (_ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl;
  const provider = new Provider(issuer, {
    clients: Object.values(clients).map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: c.scope,
    })),
    jwks: { keys: [key] },
    scopes: ['openid', 'offline_access', ...SCOPES],
    cookies: { keys: cookieKeys },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo,
      },
    },
    ttl: {
      AccessToken: lifetime,
      ClientCredentials: lifetime,
      AuthorizationCode: 60,
      IdToken: 600,
      RefreshToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
    async findAccount(_ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },
  });
  return { provider, handler: provider.callback() };
}

let generation = 1;
let key = newSigningKey(generation);
let current;
const server = createServer((req, res) => current.handler(req, res));
server.on('error', (e) => fail(`listen on 127.0.0.1:${port}: ${e.message}`));
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  const issuer = `http://127.0.0.1:${actual}`;
  current = buildProvider(issuer, key);
  // Ready for a rotation before anyone can know the pid from the info file.
  process.on('SIGHUP', () => {
    generation += 1;
    key = newSigningKey(generation);
    current = buildProvider(issuer, key);
    writeInfo(issuer, actual);
    console.error(`oidc provider: rotated the signing key: generation ${generation}, kid ${key.kid}`);
  });
  writeInfo(issuer, actual);
  console.error(`oidc provider: ${issuer} (kid ${key.kid}), resource ${RESOURCE}${OTHER ? `, other ${OTHER}` : ''}`);
});

function writeInfo(issuer, actualPort) {
  const info = {
    issuer,
    port: actualPort,
    pid: process.pid,
    generation,
    kid: key.kid,
    jwks_uri: `${issuer}/jwks`,
    token_endpoint: `${issuer}/token`,
    resource: RESOURCE,
    other_resource: OTHER ?? null,
    ttl,
    short_ttl: shortTtl,
    clients,
  };
  const path = opt['info-file'];
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

function stop(why) {
  console.error(`oidc provider: stopping (${why})`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
if (maxLifetime > 0) setTimeout(() => stop(`--max-lifetime ${maxLifetime} s`), maxLifetime * 1000).unref();
