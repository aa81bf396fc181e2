// A real OAuth 2.1 authorization server (oidc-provider) on loopback for Marina's tests: client
// credentials grants, RFC 8707 resource indicators, RS256-signed JWT access tokens (typ at+jwt).
//
//   PORT       port to listen on (127.0.0.1 only); the issuer is http://127.0.0.1:<PORT>
//   RESOURCES  comma-separated audiences tokens may be issued for (Marina tenants' endpoints)
//   TOKEN_TTL  access-token lifetime in seconds (default 300)
//   KEYS_DIR   if set, the signing key is written there (private.pem, kid) so tests can forge
//              tokens with the issuer's own key (expired, wrong audience, …)
//
// Clients (secret "gw-secret", client_secret_basic): gw-test (roles [operator]) and gw-other
// (roles [viewer]); `sub` is the client id. Prints "issuer <url> ready" once listening.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Provider, { errors } from 'oidc-provider';
import { exportJWK, exportPKCS8, generateKeyPair } from 'jose';

const PORT = Number(process.env.PORT ?? 3200);
const ISSUER = `http://127.0.0.1:${PORT}`;
const RESOURCES = (process.env.RESOURCES ?? 'http://127.0.0.1:8080/mcp').split(',');
const TTL = Number(process.env.TOKEN_TTL ?? 300);
const ROLES = { 'gw-test': ['operator'], 'gw-other': ['viewer'] };
const KID = 'test-k1';

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: KID, alg: 'RS256', use: 'sig' };
if (process.env.KEYS_DIR) {
  writeFileSync(join(process.env.KEYS_DIR, 'private.pem'), await exportPKCS8(privateKey));
  writeFileSync(join(process.env.KEYS_DIR, 'kid'), KID);
}

const client = (id) => ({
  client_id: id,
  client_secret: 'gw-secret',
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(ISSUER, {
  jwks: { keys: [jwk] },
  clients: [client('gw-test'), client('gw-other')],
  scopes: ['mcp:tools', 'mcp:resources', 'mcp:admin', 'marina:admin'],
  ttl: { ClientCredentials: TTL },
  extraTokenClaims: (ctx, token) => ({ roles: ROLES[token.clientId] ?? [] }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, c, oneOf) => oneOf ?? RESOURCES[0],
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (!RESOURCES.includes(resourceIndicator)) throw new errors.InvalidTarget();
        return {
          scope: 'mcp:tools mcp:resources mcp:admin marina:admin',
          audience: resourceIndicator,
          accessTokenTTL: TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});
provider.listen(PORT, '127.0.0.1', () => console.log(`issuer ${ISSUER} ready`));
