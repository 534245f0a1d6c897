// Mints session tokens of every kind the cross-check needs with keys made
// now, asks the official @clerk/backend verifyToken (jwtKey,
// authorizedParties, clockSkewInMs) for its verdict on each, and prints one
// JSON document: the public key (PEM and JWKS), the options, and [{kind, token, ok, reason}].
// The private keys never leave this process.
//   node clerk_verdicts.cjs <node_modules folder> <count>
'use strict';
const path = require('path');
const crypto = require('crypto');
const { verifyToken } = require(path.join(process.argv[2], '@clerk/backend'));

const count = Number(process.argv[3] || 300);
const skewMs = 60_000;
const parties = ['https://app.example', 'https://admin.example'];
// Clerk's jwtKey handling assumes a 2048-bit key with e = 65537, as Clerk issues.
const gen = () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 65537 });
const main = gen();
const other = gen();
const pem = main.publicKey.export({ type: 'spki', format: 'pem' });
const jwk = Object.assign({ kid: 'ins_main', use: 'sig', alg: 'RS256' }, main.publicKey.export({ format: 'jwk' }));

const b64u = (buf) => Buffer.from(buf).toString('base64url');
const enc = (obj) => b64u(typeof obj === 'string' ? obj : JSON.stringify(obj));
const rs256 = (key, header, payload) => {
  const input = enc(header) + '.' + enc(payload);
  return input + '.' + b64u(crypto.sign('sha256', Buffer.from(input), key));
};
let seq = 0;
const rnd = (n) => crypto.randomInt(n);

function claims(over = {}) {
  const now = Math.floor(Date.now() / 1000);
  seq += 1;
  return Object.assign({
    azp: parties[rnd(2)], exp: now + 60 + rnd(3600), fva: [rnd(100), -1], iat: now - rnd(30),
    iss: 'https://clerk.example', nbf: now - 10 - rnd(30), sid: 'sess_' + seq, sts: 'active',
    sub: 'user_' + rnd(1e9), v: 2,
  }, over);
}
const header = (over = {}) => Object.assign({ alg: 'RS256', kid: 'ins_main', typ: 'JWT' }, over);

// Replace one character of a part by another of the base64url alphabet.
function flip(token, part) {
  const parts = token.split('.');
  const s = parts[part];
  const at = rnd(s.length);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  let c;
  do c = alphabet[rnd(64)]; while (c === s[at]);
  parts[part] = s.slice(0, at) + c + s.slice(at + 1);
  return parts.join('.');
}

const now = () => Math.floor(Date.now() / 1000);
const kinds = {
  valid: () => rs256(main.privateKey, header(), claims()),
  valid_no_typ_no_nbf: () => rs256(main.privateKey, { alg: 'RS256', kid: 'ins_main' }, claims({ nbf: undefined })),
  expired_within_skew: () => rs256(main.privateKey, header(), claims({ exp: now() - 20 })),
  expired: () => rs256(main.privateKey, header(), claims({ exp: now() - 120 - rnd(86400) })),
  not_yet_valid: () => rs256(main.privateKey, header(), claims({ nbf: now() + 120 + rnd(3600), exp: now() + 7200 })),
  issued_in_future: () => rs256(main.privateKey, header(), claims({ iat: now() + 120 + rnd(3600), nbf: undefined, exp: now() + 7200 })),
  wrong_azp: () => rs256(main.privateKey, header(), claims({ azp: 'https://evil' + rnd(100) + '.example' })),
  missing_azp: () => rs256(main.privateKey, header(), claims({ azp: undefined })),
  tampered_header: () => {
    const t = rs256(main.privateKey, header(), claims());
    return rnd(2) ? enc(header({ kid: 'ins_other' })) + t.slice(t.indexOf('.')) : flip(t, 0);
  },
  tampered_payload: () => {
    const t = rs256(main.privateKey, header(), claims());
    const p = t.split('.');
    if (rnd(2)) return flip(t, 1);
    const c = JSON.parse(Buffer.from(p[1], 'base64url'));
    c.sub = 'user_admin';
    return [p[0], enc(c), p[2]].join('.');
  },
  tampered_signature: () => flip(rs256(main.privateKey, header(), claims()), 2),
  alg_none: () => enc(header({ alg: 'none' })) + '.' + enc(claims()) + '.',
  hs256_with_public_key: () => {
    const input = enc(header({ alg: 'HS256' })) + '.' + enc(claims());
    return input + '.' + b64u(crypto.createHmac('sha256', pem).update(input).digest());
  },
  unknown_kid_right_key: () => rs256(main.privateKey, header({ kid: 'ins_unknown' + rnd(100) }), claims()),
  unknown_kid_other_key: () => rs256(other.privateKey, header({ kid: 'ins_unknown' + rnd(100) }), claims()),
  other_key: () => rs256(other.privateKey, header(), claims()),
  truncated: () => { const t = rs256(main.privateKey, header(), claims()); return t.slice(0, 1 + rnd(t.length - 1)); },
  typ_not_jwt: () => rs256(main.privateKey, header({ typ: 'at+jwt' }), claims()),
  missing_sub: () => rs256(main.privateKey, header(), claims({ sub: undefined })),
  padded_signature: () => rs256(main.privateKey, header(), claims()) + '='.repeat(1 + rnd(4)),
};

(async () => {
  const names = Object.keys(kinds);
  const out = [];
  for (let i = 0; i < count; i++) {
    const kind = names[i % names.length];
    const token = kinds[kind]();
    // The exported verifyToken returns the payload, or throws a TokenVerificationError.
    let verdict = { ok: true, reason: 'ok' };
    try {
      await verifyToken(token, { jwtKey: pem, authorizedParties: parties, clockSkewInMs: skewMs });
    } catch (e) {
      verdict = { ok: false, reason: String(e.reason || e.message) };
    }
    out.push(Object.assign({ kind, token }, verdict));
  }
  process.stdout.write(JSON.stringify({ pem, jwks: { keys: [jwk] }, authorized_parties: parties, clock_skew_ms: skewMs, verdicts: out }));
})().catch((e) => { console.error(e); process.exit(1); });
