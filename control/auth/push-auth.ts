// Who may push instance events to the function URL.
//
// GCE (Pub/Sub push with authentication): every request carries
// "Authorization: Bearer <JWT>", an OpenID Connect ID token that Google signs
// for the push subscription's service account. It is accepted only when
//   - its RS256 signature verifies against Google's published keys (JWKS,
//     fetched once per container and re-fetched when an unknown key id shows
//     up, so Google's key rotation needs nothing from us),
//   - it was issued by accounts.google.com and has not expired,
//   - its audience is the one configured on the subscription (by default the
//     push endpoint's URL; twill asks for it to be set explicitly),
//   - its email is the configured service account, and Google says the
//     email is verified.
// Anyone can get a Google-signed token for their own service account and any
// audience, so the audience alone proves nothing; the service account is
// what ties the token to the operator's subscription.
//
// Alibaba Cloud EventBridge: a shared token in a header (Authorization:
// Bearer, or x-twill-token) or, for targets that cannot set headers, in the
// URL's query string. Compared in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';

export const GOOGLE_JWKS_URL = 'https://www.googleapis.com/oauth2/v3/certs';
export const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];

export type AuthResult = { ok: true; subject: string } | { ok: false; status: 401 | 403; reason: string };

export interface GoogleOidcOptions {
  audience: string;
  serviceAccount: string;
  /** default Google's; a test serves its own */
  jwksUrl?: string;
  /** seconds of clock skew allowed on exp/iat; default 60 */
  clockToleranceS?: number;
}

/** The bearer token of an Authorization header, if there is one. */
export function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}

/** A verifier holding its key set, made once per container. */
export function googleOidcVerifier(opts: GoogleOidcOptions): (authorization: string | undefined) => Promise<AuthResult> {
  if (!opts.audience || !opts.serviceAccount) throw new Error('GCE push verification needs both the audience and the service account');
  const jwks: JWTVerifyGetKey = createRemoteJWKSet(new URL(opts.jwksUrl ?? GOOGLE_JWKS_URL), { timeoutDuration: 5000, cooldownDuration: 30_000 });
  return async (authorization) => {
    const token = bearer(authorization);
    if (!token) return { ok: false, status: 401, reason: 'missing bearer token: enable authentication on the Pub/Sub push subscription' };
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: GOOGLE_ISSUERS,
        audience: opts.audience,
        algorithms: ['RS256'],
        clockTolerance: opts.clockToleranceS ?? 60,
        requiredClaims: ['exp', 'iat', 'email'],
      }));
    } catch (e) {
      return { ok: false, status: 403, reason: `token refused: ${describeJoseError(e)}` };
    }
    if (payload.email !== opts.serviceAccount) {
      return { ok: false, status: 403, reason: `token is for ${String(payload.email).slice(0, 200)}, not the configured service account` };
    }
    if (payload.email_verified !== true) return { ok: false, status: 403, reason: 'token email is not verified' };
    return { ok: true, subject: opts.serviceAccount };
  };
}

function describeJoseError(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return 'expired';
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `claim ${e.claim} ${e.reason === 'check_failed' ? 'does not match' : e.reason}`;
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (e instanceof joseErrors.JWKSNoMatchingKey) return 'signed by a key Google does not publish';
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid) return 'malformed token';
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (e instanceof joseErrors.JWKSTimeout) return 'Google keys could not be fetched in time';
  return e instanceof Error ? e.message.slice(0, 200) : 'invalid token';
}

/** Hashing first makes the comparison constant-time whatever the lengths. */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (!given || !expected) return false;
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(given), h(expected));
}

/** The shared token of a request: a header, else the query string. */
export function sharedTokenOf(headers: Record<string, string | undefined>, query: Record<string, string | undefined>): string | undefined {
  return bearer(headers.authorization) ?? headers['x-twill-token'] ?? query.token;
}

export function checkSharedToken(given: string | undefined, expected: string): AuthResult {
  if (!given) return { ok: false, status: 401, reason: 'missing token: send Authorization: Bearer <token>, x-twill-token or ?token=' };
  if (!tokenMatches(given, expected)) return { ok: false, status: 403, reason: 'wrong token' };
  return { ok: true, subject: 'shared-token' };
}
