// A real OAuth2 authorization server on loopback (oauth2-mock-server): the client-credentials
// grant and a JWKS, with this test's rules on top.
//
//   node server.mjs CLIENT_ID CLIENT_SECRET TTL_SECONDS ORGANIZATION AUDIENCE
//
// Only CLIENT_ID with CLIENT_SECRET (HTTP Basic or form fields) gets a token; anything else is
// `401 invalid_client`. Tokens live TTL_SECONDS, speak for ORGANIZATION (claim `org_id`) and carry
// the scopes asked for. Prints {"issuer": …} once listening, then one line per token issued.
import { OAuth2Server } from 'oauth2-mock-server';

const [clientId, clientSecret, ttlText, organization, audience] = process.argv.slice(2);
const ttl = Number(ttlText);

function credentials(req) {
  const header = req.headers.authorization ?? '';
  if (header.toLowerCase().startsWith('basic ')) {
    const [id, secret] = Buffer.from(header.slice(6), 'base64').toString().split(':');
    return [decodeURIComponent(id), decodeURIComponent(secret ?? '')];
  }
  return [req.body?.client_id, req.body?.client_secret];
}

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token, req) => {
  token.header.typ = 'at+jwt';
  token.payload.aud = audience;
  token.payload.sub = credentials(req)[0];
  token.payload.org_id = organization;
  token.payload.exp = token.payload.iat + ttl;
});
server.service.on('beforeResponse', (response, req) => {
  const [id, secret] = credentials(req);
  if (id !== clientId || secret !== clientSecret) {
    response.statusCode = 401;
    response.body = { error: 'invalid_client', error_description: 'unknown client or wrong secret' };
    return;
  }
  response.body.expires_in = ttl;
  console.log(JSON.stringify({ token: 'issued', scope: response.body.scope }));
});
await server.start(0, '127.0.0.1');
console.log(JSON.stringify({ issuer: server.issuer.url }));
