// AWS Lambda's account settings, as the real LambdaClient reads them: REST-JSON
// GetAccountSettings (GET /2016-08-19/account-settings/, "GetAccountSettings",
// AWS Lambda API Reference), SigV4-signed for lambda in the stand-in's region.
//
// The account is modelled, not scripted: a concurrency quota and the functions
// that reserve part of it. UnreservedConcurrentExecutions is the quota minus
// every reservation, and reserve() refuses what Lambda refuses: a reservation
// that leaves the account fewer unreserved executions than its minimum, 100
// ("Configuring reserved concurrency", AWS Lambda Developer Guide: you can
// reserve up to the unreserved account concurrency minus 100), or the whole
// quota when it is under 100 (Lambda's InvalidParameterValueException then
// names a minimum of [quota]: new accounts get quotas of 10 to 50, "Lambda
// quotas"), so a test cannot build an account AWS would not allow.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { notAuthorized, sendJson, serveOnLoopback, sigv4Refusal } from './aws-endpoint.js';

/** "Lambda quotas": code storage a Region allows (75 GB) and a deployment package's limits, as GetAccountSettings reports them. */
const TOTAL_CODE_SIZE = 80_530_636_800;
const CODE_SIZE_UNZIPPED = 262_144_000;
const CODE_SIZE_ZIPPED = 52_428_800;

export interface FakeLambda {
  endpoint: string;
  /** the account's concurrent executions quota in this region (1,000 by default; a new account's is 10 to 50) */
  concurrency: number;
  /** function name -> reserved concurrent executions */
  readonly reserved: ReadonlyMap<string, number>;
  /** reserves executions for a function, as PutFunctionConcurrency would; throws Lambda's refusal */
  reserve(functionName: string, executions: number): void;
  /** IAM actions the caller is denied (e.g. lambda:GetAccountSettings) */
  readonly deny: Set<string>;
  readonly calls: string[];
  close(): Promise<void>;
}

/** The fewest executions Lambda leaves unreserved in an account with this quota. */
export function unreservedMinimum(quota: number): number {
  return Math.min(100, quota);
}

const send = (res: ServerResponse, status: number, body: unknown) => sendJson(res, status, body);
const fail = (res: ServerResponse, status: number, type: string, message: string) => sendJson(res, status, { Type: 'User', message }, 'application/json', type);

export async function startFakeLambda(opts: { region?: string; concurrency?: number } = {}): Promise<FakeLambda> {
  const region = opts.region ?? 'us-east-1';
  const reserved = new Map<string, number>();
  const calls: string[] = [];
  const deny = new Set<string>();
  const state = { concurrency: opts.concurrency ?? 1000 };
  const unreserved = () => state.concurrency - [...reserved.values()].reduce((a, b) => a + b, 0);

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const refused = sigv4Refusal(req, 'lambda', region);
    if (refused) return fail(res, 403, refused.missing ? 'MissingAuthenticationTokenException' : 'InvalidSignatureException', refused.message);
    const url = new URL(req.url ?? '/', 'http://lambda');
    // The reference writes the path with a trailing slash; the SDK sends it without.
    if (req.method === 'GET' && url.pathname.replace(/\/$/, '') === '/2016-08-19/account-settings') {
      calls.push('GetAccountSettings');
      if (deny.has('lambda:GetAccountSettings')) return fail(res, 403, 'AccessDeniedException', notAuthorized('lambda:GetAccountSettings'));
      return send(res, 200, {
        AccountLimit: {
          TotalCodeSize: TOTAL_CODE_SIZE,
          CodeSizeUnzipped: CODE_SIZE_UNZIPPED,
          CodeSizeZipped: CODE_SIZE_ZIPPED,
          ConcurrentExecutions: state.concurrency,
          UnreservedConcurrentExecutions: unreserved(),
        },
        AccountUsage: { TotalCodeSize: 0, FunctionCount: reserved.size },
      });
    }
    return fail(res, 404, 'UnknownOperationException', `${req.method} ${url.pathname} is not an operation this stand-in serves`);
  };

  const server = await serveOnLoopback((req, _body, res) => handle(req, res));
  return {
    endpoint: server.endpoint,
    get concurrency() {
      return state.concurrency;
    },
    set concurrency(n: number) {
      const held = state.concurrency - unreserved();
      if (!Number.isInteger(n) || n < 1 || n - held < unreservedMinimum(n)) throw new Error(`a quota of ${n} cannot hold the ${held} executions reserved here`);
      state.concurrency = n;
    },
    reserved,
    deny,
    calls,
    reserve(functionName, executions) {
      const others = unreserved() + (reserved.get(functionName) ?? 0);
      const minimum = unreservedMinimum(state.concurrency);
      if (!Number.isInteger(executions) || executions < 0) throw new Error(`InvalidParameterValueException: ReservedConcurrentExecutions ${executions} is not a whole number of executions`);
      if (others - executions < minimum) {
        throw new Error(`InvalidParameterValueException: Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [${minimum}].`);
      }
      reserved.set(functionName, executions);
    },
    close: server.close,
  };
}
