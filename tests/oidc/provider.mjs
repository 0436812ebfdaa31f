// A real OpenID provider for rolesync's integration tests (tests/api/oidc*.rs start it):
// the certified `oidc-provider` package, configured with the clients, accounts and claims the
// tests use. It listens on 127.0.0.1:$OIDC_PORT; its issuer is http://127.0.0.1:$OIDC_PORT.
//
// Environment:
//   OIDC_PORT            the port (required)
//   OIDC_AUDIENCE        the `aud` of its access tokens (default "rolesync")
//   OIDC_REDIRECT_URIS   space-separated redirect URIs of the console client
//   OIDC_POST_LOGOUT     space-separated post-logout redirect URIs of the console client
//
// Test hooks, under /_test (not part of any provider; a test's way to act as the provider's
// operator):
//   POST /_test/rotate   a new signing key is made and published first (the old one stays
//                        published): tokens from then on carry the new `kid`
//   POST /_test/sign     {claims, header?, key?: "current" | "stranger" | "hs256-public"}: a
//                        JWS of `claims` signed with the current key, with a key never
//                        published, or with HS256 and the current public key (PEM) as secret
//   GET  /_test/stats    {"jwks_fetches": n, "kids": [...]}: how often the JWKS was read

import { createPublicKey } from 'node:crypto';
import http from 'node:http';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('OIDC_PORT must be a port number');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const audience = process.env.OIDC_AUDIENCE || 'rolesync';
const words = (s) => (s || '').split(' ').filter(Boolean);

// Machine clients (client credentials) and the role claims their tokens carry.
const machines = {
  'hr-writer': { secret: 'hr-writer-secret', roles: ['rolesync.writer'] },
  'hr-reader': { secret: 'hr-reader-secret', roles: ['rolesync.reader'] },
  'hr-nobody': { secret: 'hr-nobody-secret', roles: [] },
};

// People (the console): any password signs in on the dev login page; the login name picks the
// account, and its groups.
const people = {
  'ops-admin': { name: 'Ada Admin', groups: ['rolesync-admins'] },
  'ops-reader': { name: 'Rex Reader', groups: ['rolesync-readers'] },
  'ops-nobody': { name: 'Nora Nobody', groups: ['elsewhere'] },
};

async function newKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  const kid = (await jose.calculateJwkThumbprint(jwk)).slice(0, 16);
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

let keys = [await newKey()];
const stranger = await newKey();
let jwksFetches = 0;

function build() {
  const provider = new Provider(issuer, {
    clients: [
      ...Object.entries(machines).map(([id, m]) => ({
        client_id: id,
        client_secret: m.secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      })),
      {
        client_id: 'rolesync-console',
        client_secret: 'rolesync-console-secret',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: words(process.env.OIDC_REDIRECT_URIS),
        post_logout_redirect_uris: words(process.env.OIDC_POST_LOGOUT),
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys },
    claims: { openid: ['sub'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'groups'],
    // The ID token carries the claims its scopes ask for (name, groups).
    conformIdTokenClaims: false,
    async findAccount(_ctx, id) {
      const person = people[id];
      if (!person) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, name: person.name, groups: person.groups };
        },
      };
    },
    // The console is a first-party client: no consent page.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile groups');
      await grant.save();
      return grant;
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => `urn:${audience}`,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          audience,
          scope: 'jobs:read jobs:write',
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    async extraTokenClaims(_ctx, token) {
      const machine = machines[token.clientId];
      if (token.kind === 'ClientCredentials' && machine) return { roles: machine.roles };
      return undefined;
    },
    ttl: { ClientCredentials: 300, IdToken: 300, AccessToken: 300 },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

let provider = build();

async function body(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 65536) throw new Error('body too large');
    chunks.push(c);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.url === '/_test/rotate' && req.method === 'POST') {
      keys = [await newKey(), keys[0]];
      provider = build();
      return json(res, 200, { kids: keys.map((k) => k.kid) });
    }
    if (req.url === '/_test/sign' && req.method === 'POST') {
      const { claims, header, key } = await body(req);
      if (key === 'hs256-public') {
        // The algorithm-confusion forgery: HS256 with the public key (PEM) as the secret.
        const { d, p, q, dp, dq, qi, ...pub } = keys[0];
        const pem = createPublicKey({ key: pub, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
        const token = await new jose.SignJWT(claims)
          .setProtectedHeader({ alg: 'HS256', kid: keys[0].kid, typ: 'at+jwt' })
          .sign(new TextEncoder().encode(pem));
        return json(res, 200, { token, kid: keys[0].kid });
      }
      const jwk = key === 'stranger' ? stranger : keys[0];
      const signer = await jose.importJWK(jwk, 'RS256');
      const token = await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt', ...(header || {}) })
        .sign(signer);
      return json(res, 200, { token, kid: jwk.kid });
    }
    if (req.url === '/_test/stats') {
      return json(res, 200, { jwks_fetches: jwksFetches, kids: keys.map((k) => k.kid) });
    }
    if (req.url === '/jwks') jwksFetches += 1;
    return provider.callback()(req, res);
  } catch (err) {
    return json(res, 500, { error: String(err) });
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
