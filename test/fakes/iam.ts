// IAM for the AWS stand-ins (dynamodb.ts, ec2.ts, iot-data.ts, ssm.ts): the
// access key id a request is signed with (SigV4's Credential=) names a
// principal, and each call the request makes (an action on a resource ARN,
// computed by the stand-in as the service computes it) is evaluated against
// that principal's statements as IAM evaluates identity-based policies in
// one account ("Policy evaluation logic", IAM user guide): an explicit Deny
// wins, else an Allow is needed, else the call is implicitly denied. Actions
// match case-insensitively, resources case-sensitively, both with the `*`
// and `?` wildcards; in a resource a wildcard stays within its ARN segment
// unless a `*` ends the segment ("IAM JSON policy elements: Resource").
// A refusal is worded as AWS words it ("Troubleshoot access denied error
// messages", IAM user guide): "User: <caller> is not authorized to perform:
// <action> on resource: <arn> because no identity-based policy allows the
// <action> action", or "... with an explicit deny in an identity-based policy".
// A request signed with an access key nobody holds is refused too.
//
// A Lambda function's principal is its role session, holding the statements
// infra grants it (infra/grants.ts, filled with the test's account, region,
// table, prefix and parameter names). A test itself is not a function: it
// acts as an explicit admin user (ADMIN_KEYS), never by checks switched off.
//
// Not modelled: the signature itself is not verified (a request is taken to
// come from the holder of its access key), nor conditions, resource-based
// policies, permission boundaries or SCPs; twill's grants use none.
import { FUNCTIONS, grantsOf, type FunctionName, type GrantValues } from '../../infra/grants.js';

export interface Statement {
  effect: 'Allow' | 'Deny';
  actions: readonly string[];
  resources: readonly string[];
}

export interface Principal {
  /** as AWS names the caller in an access denied message */
  arn: string;
  /** what it may do; a test may change them (take a grant away) and put them back */
  statements: Statement[];
}

/** One call as IAM authorizes it: a request may be several (DynamoDB authorizes a transaction item by item). */
export interface Call {
  action: string;
  resource: string;
}

/** Where a request's ARNs live: its signing region, the account and partition of this IAM. */
export interface Scope {
  partition: string;
  region: string;
  account: string;
}

export interface Refusal {
  /** 'unknown-key': no principal holds the access key; 'denied': a call is not allowed */
  kind: 'unknown-key' | 'denied';
  /** AWS's wording: "User: ARN is not authorized to perform: ACTION on resource: ARN because ..." */
  message: string;
  principal?: string;
  action?: string;
  resource?: string;
}

export const ACCOUNT = '123456789012';

/**
 * The test's own access keys: an IAM user may hold two (the DynamoDB
 * stand-in's local client config and the clouds' fake credentials use one
 * each). Whatever signs with them is the test, not a function.
 */
export const ADMIN_KEYS = ['AKIAFAKEFAKEFAKEFAKE', 'AKIDFAKEFAKEFAKE'];
const ADMIN: Principal = { arn: `arn:aws:iam::${ACCOUNT}:user/twill-test-admin`, statements: [{ effect: 'Allow', actions: ['*'], resources: ['*'] }] };

/** The access key id and signing region of a SigV4 Authorization header. */
export function signedBy(authorization: string | undefined): { accessKeyId: string; region: string; service: string } | undefined {
  const m = /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/\d{8}\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request\b/.exec(authorization ?? '');
  return m ? { accessKeyId: m[1]!, region: m[2]!, service: m[3]! } : undefined;
}

const escape = (s: string) => s.replace(/[.+^${}()|[\]\\]/g, '\\$&');

function actionMatches(pattern: string, action: string): boolean {
  const re = escape(pattern).replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i').test(action);
}

function resourceMatches(pattern: string, arn: string): boolean {
  if (pattern === '*') return true;
  const segments = pattern.split(':').map((seg, i, all) => {
    // The resource part (everything after the fifth colon) is one segment.
    if (i > 5) return undefined;
    const text = i === 5 ? all.slice(5).join(':') : seg;
    return [...text].map((c, j) => (c === '*' ? (j === text.length - 1 ? '.*' : '[^:]*') : c === '?' ? '[^:]' : escape(c))).join('');
  });
  return new RegExp(`^${segments.filter((s) => s !== undefined).join(':')}$`).test(arn);
}

function applies(s: Statement, call: Call): boolean {
  return s.actions.some((a) => actionMatches(a, call.action)) && s.resources.some((r) => resourceMatches(r, call.resource));
}

export class Iam {
  private readonly principals = new Map<string, Principal>();
  /** every refused call, oldest first: what a test asserts was missing */
  readonly refusals: Refusal[] = [];
  /** the actions each principal (by ARN) was allowed, at least once: what its grants are used for */
  readonly allowed = new Map<string, Set<string>>();

  constructor(readonly account = ACCOUNT, readonly partition = 'aws') {
    this.add(ADMIN, ADMIN_KEYS);
  }

  add(principal: Principal, accessKeyIds: string[]): Principal {
    for (const k of accessKeyIds) this.principals.set(k, principal);
    return principal;
  }

  /** 'Allow', or why not: an explicit deny beats any allow, and no allow is an implicit deny. */
  decide(principal: Principal, call: Call): 'Allow' | 'ExplicitDeny' | 'ImplicitDeny' {
    if (principal.statements.some((s) => s.effect === 'Deny' && applies(s, call))) return 'ExplicitDeny';
    return principal.statements.some((s) => s.effect === 'Allow' && applies(s, call)) ? 'Allow' : 'ImplicitDeny';
  }

  /**
   * The refusal of a signed request, or undefined when every call it makes
   * is allowed. calls: what the request does, given where its ARNs live.
   */
  authorize(authorization: string | undefined, calls: (scope: Scope) => Call[]): Refusal | undefined {
    const signer = signedBy(authorization);
    const principal = signer && this.principals.get(signer.accessKeyId);
    if (!signer || !principal) {
      return this.refuse({ kind: 'unknown-key', message: 'The security token included in the request is invalid.' });
    }
    for (const call of calls({ partition: this.partition, region: signer.region, account: this.account })) {
      const verdict = this.decide(principal, call);
      if (verdict === 'Allow') {
        let used = this.allowed.get(principal.arn);
        if (!used) this.allowed.set(principal.arn, (used = new Set()));
        used.add(call.action);
        continue;
      }
      const why = verdict === 'ExplicitDeny' ? 'with an explicit deny in an identity-based policy' : `because no identity-based policy allows the ${call.action} action`;
      return this.refuse({
        kind: 'denied',
        message: `User: ${principal.arn} is not authorized to perform: ${call.action} on resource: ${call.resource} ${why}`,
        principal: principal.arn,
        ...call,
      });
    }
    return undefined;
  }

  private refuse(r: Refusal): Refusal {
    this.refusals.push(r);
    return r;
  }
}

export interface FunctionCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
}

/**
 * Each function's principal, as Lambda runs it: a session of the function's
 * role, holding the statements infra/grants.ts gives it with the test's
 * values. Returns the credentials Lambda would put in its environment.
 */
export function addFunctions(iam: Iam, values: Omit<GrantValues, 'partition' | 'account'>, rolePrefix: string): Map<FunctionName, { principal: Principal; credentials: FunctionCredentials }> {
  const out = new Map<FunctionName, { principal: Principal; credentials: FunctionCredentials }>();
  for (const fn of FUNCTIONS) {
    const statements = grantsOf(fn, { ...values, partition: iam.partition, account: iam.account }).map((g) => ({ effect: 'Allow' as const, ...g }));
    const principal: Principal = { arn: `arn:${iam.partition}:sts::${iam.account}:assumed-role/${rolePrefix}-${fn}Role/${rolePrefix}-${fn}`, statements };
    // Temporary credentials (ASIA...), as Lambda gives a function's role.
    const credentials = { accessKeyId: `ASIA${fn.toUpperCase().padEnd(16, 'X')}`, secretAccessKey: `fake-secret-of-${fn}`, sessionToken: `fake-session-of-${fn}` };
    iam.add(principal, [credentials.accessKeyId]);
    out.set(fn, { principal, credentials });
  }
  return out;
}

/** The statements without the actions the patterns match (a grant forgotten): what is left is implicitly denied. */
export function withoutActions(statements: Statement[], patterns: string[]): Statement[] {
  return statements.map((s) => ({ ...s, actions: s.actions.filter((a) => !patterns.some((p) => actionMatches(p, a))) }));
}
