// AWS IoT Core's control plane, the calls `twill aws check` makes with the real
// IoTClient, in IoT's REST-JSON protocol (AWS IoT API Reference), each signed
// with SigV4 for the "iot" service in the stand-in's region:
//
// - DescribeEndpoint, GET /endpoint?endpointType=T: the account's endpoint of
//   type iot:Data, iot:Data-ATS, iot:CredentialProvider or iot:Jobs (created on
//   the first call; any other type is an InvalidRequestException).
// - ListTopicRules, GET /rules?maxResults&nextToken: maxResults 1 to 10,000.
// - ListAuthorizers, GET /authorizers/?pageSize&marker&status: pageSize 1 to
//   250, status ACTIVE or INACTIVE, the next page's marker in nextMarker.
//
// Errors as IoT answers them: the code in x-amzn-ErrorType and a JSON body
// with its message; an action the caller's IAM policy does not allow is an
// AccessDeniedException (403).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { notAuthorized, sendJson, serveOnLoopback, sigv4Refusal } from './aws-endpoint.js';

export interface FakeIotControl {
  endpoint: string;
  /** the account's endpoint identifier (xxxx in xxxx-ats.iot.<region>.amazonaws.com) */
  readonly identifier: string;
  /** the account's topic rules, by name */
  readonly rules: Map<string, { topicPattern: string; disabled?: boolean }>;
  /** the account's custom authorizers, by name */
  readonly authorizers: Map<string, { status: 'ACTIVE' | 'INACTIVE' }>;
  /** IAM actions the caller is denied (e.g. iot:DescribeEndpoint) */
  readonly deny: Set<string>;
  readonly calls: string[];
  close(): Promise<void>;
}

const ENDPOINT_TYPES = ['iot:Data', 'iot:Data-ATS', 'iot:CredentialProvider', 'iot:Jobs'];

const send = (res: ServerResponse, status: number, body: unknown) => sendJson(res, status, body);
const fail = (res: ServerResponse, status: number, type: string, message: string) => sendJson(res, status, { message }, 'application/json', type);

/** A page size within [1, max], or why not; absent means max. */
function pageSize(value: string | null, name: string, max: number): number | string {
  if (value === null) return max;
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 && n <= max ? n : `${name} ${value} is not between 1 and ${max}`;
}

export async function startFakeIotControl(opts: { region?: string; account?: string } = {}): Promise<FakeIotControl> {
  const region = opts.region ?? 'us-east-1';
  const account = opts.account ?? '123456789012';
  const rules = new Map<string, { topicPattern: string; disabled?: boolean }>();
  const authorizers = new Map<string, { status: 'ACTIVE' | 'INACTIVE' }>();
  const deny = new Set<string>();
  const calls: string[] = [];
  const world = { identifier: 'a1b2c3d4e5f6g7' };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const refused = sigv4Refusal(req, 'iot', region);
    if (refused) return fail(res, 403, refused.missing ? 'MissingAuthenticationTokenException' : 'InvalidSignatureException', refused.message);
    const url = new URL(req.url ?? '/', 'http://iot');
    const q = url.searchParams;
    const allowed = (action: string) => {
      calls.push(action);
      if (!deny.has(`iot:${action}`)) return true;
      fail(res, 403, 'AccessDeniedException', notAuthorized(`iot:${action}`));
      return false;
    };
    if (req.method === 'GET' && url.pathname === '/endpoint') {
      if (!allowed('DescribeEndpoint')) return;
      const type = q.get('endpointType') ?? 'iot:Data';
      if (!ENDPOINT_TYPES.includes(type)) return fail(res, 400, 'InvalidRequestException', `endpointType ${type} is not one of ${ENDPOINT_TYPES.join(', ')}`);
      const host = type === 'iot:Data' ? `${world.identifier}.iot.${region}.amazonaws.com`
        : type === 'iot:Data-ATS' ? `${world.identifier}-ats.iot.${region}.amazonaws.com`
        : type === 'iot:CredentialProvider' ? `${world.identifier}.credentials.iot.${region}.amazonaws.com`
        : `${world.identifier}.jobs.iot.${region}.amazonaws.com`;
      return send(res, 200, { endpointAddress: host });
    }
    if (req.method === 'GET' && url.pathname === '/rules') {
      if (!allowed('ListTopicRules')) return;
      const max = pageSize(q.get('maxResults'), 'maxResults', 10_000);
      if (typeof max === 'string') return fail(res, 400, 'InvalidRequestException', max);
      const names = [...rules.keys()].sort();
      const start = Number(q.get('nextToken') ?? '0');
      if (!Number.isInteger(start) || start < 0 || start > names.length) return fail(res, 400, 'InvalidRequestException', `nextToken ${q.get('nextToken')} is not one this service gave`);
      const page = names.slice(start, start + max).map((ruleName) => ({
        ruleName,
        ruleArn: `arn:aws:iot:${region}:${account}:rule/${ruleName}`,
        topicPattern: rules.get(ruleName)!.topicPattern,
        ruleDisabled: rules.get(ruleName)!.disabled ?? false,
        createdAt: 1_790_000_000,
      }));
      return send(res, 200, { rules: page, ...(start + max < names.length ? { nextToken: String(start + max) } : {}) });
    }
    // The reference writes /authorizers/; the SDK sends it without the slash.
    if (req.method === 'GET' && url.pathname.replace(/\/$/, '') === '/authorizers') {
      if (!allowed('ListAuthorizers')) return;
      const max = pageSize(q.get('pageSize'), 'pageSize', 250);
      if (typeof max === 'string') return fail(res, 400, 'InvalidRequestException', max);
      const status = q.get('status');
      if (status !== null && status !== 'ACTIVE' && status !== 'INACTIVE') return fail(res, 400, 'InvalidRequestException', `status ${status} is not ACTIVE or INACTIVE`);
      const names = [...authorizers.keys()].filter((n) => status === null || authorizers.get(n)!.status === status).sort();
      // Markers are opaque base64 to the caller, as IoT's are ([A-Za-z0-9+/]+={0,2}).
      const marker = q.get('marker');
      const start = marker === null ? 0 : Number(Buffer.from(marker, 'base64').toString('utf8'));
      if (!Number.isInteger(start) || start < 0 || start > names.length) return fail(res, 400, 'InvalidRequestException', `marker ${marker} is not one this service gave`);
      const page = names.slice(start, start + max).map((authorizerName) => ({ authorizerName, authorizerArn: `arn:aws:iot:${region}:${account}:authorizer/${authorizerName}` }));
      return send(res, 200, { authorizers: page, ...(start + max < names.length ? { nextMarker: Buffer.from(String(start + max)).toString('base64') } : {}) });
    }
    return fail(res, 404, 'UnknownOperationException', `${req.method} ${url.pathname} is not an operation this stand-in serves`);
  };

  const server = await serveOnLoopback((req, _body, res) => handle(req, res));
  return {
    endpoint: server.endpoint,
    identifier: world.identifier,
    rules,
    authorizers,
    deny,
    calls,
    close: server.close,
  };
}
