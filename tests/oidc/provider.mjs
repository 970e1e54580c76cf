// A real OpenID Connect provider (panva/oidc-provider, OpenID Certified) for FAMA's sign-in tests.
// Usage: node provider.mjs CONFIG.json   (written by tests/support/oidc.py)
// CONFIG: { issuer, port, jwks: {keys: [private JWK]}, clients: [...], accounts: {login: {claims}} }
// Any password signs in an account listed in CONFIG (the provider's development login page).
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;
const extraClaims = [...new Set(Object.values(accounts).flatMap((claims) => Object.keys(claims)))]
  .filter((name) => !['sub', 'name', 'email'].includes(name));

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: ['fama-test-oidc-cookie-key'] },
  claims: { openid: ['sub'], profile: ['name', ...extraClaims], email: ['email'] },
  // The groups and roles go into the ID token itself, as Entra ID puts them.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  ttl: { IdToken: 600, AccessToken: 600, Session: 3600, Grant: 3600, Interaction: 600 },
  async findAccount(_ctx, id) {
    if (!(id in accounts)) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...accounts[id] }; } };
  },
  // First-party application: no consent screen (the organisation consented for its staff).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email');
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.listen(config.port, '127.0.0.1', () => console.log(`oidc-provider ready at ${config.issuer}`));
