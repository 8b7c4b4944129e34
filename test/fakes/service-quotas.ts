// Service Quotas, as the real ServiceQuotasClient reads it: AWS JSON 1.1
// (POST /, X-Amz-Target: ServiceQuotasV20190624.<Operation>), SigV4-signed for
// "servicequotas" in the stand-in's region (Service Quotas API Reference):
//
// - ListServiceQuotas {ServiceCode, MaxResults 1-100, NextToken}: the applied
//   values of a service's quotas. A quota whose applied value Service Quotas
//   does not track is left out ("If the applied quota value is not available
//   for a quota, the quota is not retrieved").
// - ListAWSDefaultServiceQuotas: the same shape, every quota at its default.
// - GetServiceQuota {ServiceCode, QuotaCode}: one applied value, or
//   NoSuchResourceException.
//
// An unknown service code is a NoSuchResourceException, a MaxResults out of
// range an IllegalArgumentException, a token this service did not give an
// InvalidPaginationTokenException, an action IAM does not allow an
// AccessDeniedException: each with __type and message, as JSON 1.1 answers.
// ServiceCode and QuotaCode must match their patterns ("GetServiceQuota",
// Service Quotas API Reference: [a-zA-Z][a-zA-Z0-9-]{1,63} and
// {1,128}), else IllegalArgumentException ("Invalid input was provided"),
// all with HTTP 400 as that page lists them.
//
// Who may call is either the deny set (the test's admin keys, an action taken
// away) or, given an Iam (test/fakes/iam.ts), the caller's statements, as the
// functions' grants (infra/grants.ts) give them. The actions are authorized
// on "*": a grant naming one quota's ARN would have to be proved by the
// Service Authorization Reference first, so the stand-in accepts none.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { notAuthorized, sendJson, serveOnLoopback, sigv4Refusal } from './aws-endpoint.js';
import type { Iam } from './iam.js';

export interface FakeQuota {
  code: string;
  name: string;
  /** the value this account has (an increase granted, or the default) */
  value: number;
  default: number;
  adjustable: boolean;
  /** false: ListServiceQuotas leaves it out (only its default is available) */
  applied?: boolean;
  unit?: string;
}

export interface FakeServiceQuotas {
  endpoint: string;
  /** service code -> its quotas */
  readonly services: Map<string, FakeQuota[]>;
  readonly deny: Set<string>;
  /** the callers' statements (the serverless world's, functions' grants); without it, anyone signed may call */
  iam?: Iam;
  readonly calls: string[];
  close(): Promise<void>;
}

const TARGET = 'ServiceQuotasV20190624.';

const send = (res: ServerResponse, status: number, body: unknown) => sendJson(res, status, body, 'application/x-amz-json-1.1');
const fail = (res: ServerResponse, status: number, type: string, message: string) => send(res, status, { __type: type, message });

const SERVICE_CODE = /^[a-zA-Z][a-zA-Z0-9-]{1,63}$/;
const QUOTA_CODE = /^[a-zA-Z][a-zA-Z0-9-]{1,128}$/;

export async function startFakeServiceQuotas(opts: { region?: string; account?: string; iam?: Iam } = {}): Promise<FakeServiceQuotas> {
  const region = opts.region ?? 'us-east-1';
  const account = opts.account ?? '123456789012';
  const services = new Map<string, FakeQuota[]>();
  const deny = new Set<string>();
  const calls: string[] = [];

  const shape = (service: string, q: FakeQuota, value: number) => ({
    ServiceCode: service,
    ServiceName: service,
    QuotaArn: `arn:aws:servicequotas:${region}:${account}:${service}/${q.code}`,
    QuotaCode: q.code,
    QuotaName: q.name,
    Value: value,
    Unit: q.unit ?? 'None',
    Adjustable: q.adjustable,
    GlobalQuota: false,
    QuotaAppliedAtLevel: 'ACCOUNT',
  });

  const handle = (req: IncomingMessage, body: string, res: ServerResponse) => {
    const refused = sigv4Refusal(req, 'servicequotas', region);
    if (refused) return fail(res, 403, refused.missing ? 'MissingAuthenticationTokenException' : 'InvalidSignatureException', refused.message);
    const target = String(req.headers['x-amz-target'] ?? '');
    if (req.method !== 'POST' || !target.startsWith(TARGET)) return fail(res, 400, 'UnknownOperationException', `${target || '(no X-Amz-Target)'} is not an operation of Service Quotas`);
    const action = target.slice(TARGET.length);
    calls.push(action);
    if (deny.has(`servicequotas:${action}`)) return fail(res, 400, 'AccessDeniedException', notAuthorized(`servicequotas:${action}`));
    const denied = fake.iam?.authorize(req.headers.authorization, () => [{ action: `servicequotas:${action}`, resource: '*' }]);
    if (denied?.kind === 'unknown-key') return fail(res, 400, 'UnrecognizedClientException', denied.message);
    if (denied) return fail(res, 400, 'AccessDeniedException', denied.message);
    let input: { ServiceCode?: unknown; QuotaCode?: unknown; MaxResults?: unknown; NextToken?: unknown };
    try {
      input = JSON.parse(body || '{}') as typeof input;
    } catch {
      return fail(res, 400, 'SerializationException', 'the request body is not JSON');
    }
    const service = typeof input.ServiceCode === 'string' ? input.ServiceCode : undefined;
    if (!service) return fail(res, 400, 'IllegalArgumentException', 'ServiceCode is required');
    if (!SERVICE_CODE.test(service)) return fail(res, 400, 'IllegalArgumentException', `ServiceCode ${JSON.stringify(service)} does not match ${SERVICE_CODE.source}`);
    const quotas = services.get(service);
    if (!quotas) return fail(res, 400, 'NoSuchResourceException', `The request failed because the specified service ${service} does not exist.`);

    if (action === 'GetServiceQuota') {
      if (typeof input.QuotaCode !== 'string') return fail(res, 400, 'IllegalArgumentException', 'QuotaCode is required');
      if (!QUOTA_CODE.test(input.QuotaCode)) return fail(res, 400, 'IllegalArgumentException', `QuotaCode ${JSON.stringify(input.QuotaCode)} does not match ${QUOTA_CODE.source}`);
      const q = quotas.find((x) => x.code === input.QuotaCode && x.applied !== false);
      if (!q) return fail(res, 400, 'NoSuchResourceException', `The request failed because the specified quota ${String(input.QuotaCode)} does not exist for ${service}.`);
      return send(res, 200, { Quota: shape(service, q, q.value) });
    }
    if (action === 'ListServiceQuotas' || action === 'ListAWSDefaultServiceQuotas') {
      const max = input.MaxResults === undefined ? 100 : input.MaxResults;
      if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 100) return fail(res, 400, 'IllegalArgumentException', `MaxResults ${String(max)} is not between 1 and 100`);
      const listed = action === 'ListServiceQuotas' ? quotas.filter((q) => q.applied !== false) : quotas;
      const start = input.NextToken === undefined ? 0 : Number(Buffer.from(String(input.NextToken), 'base64').toString('utf8').replace(/^page:/, ''));
      if (!Number.isInteger(start) || start < 0 || start > listed.length) return fail(res, 400, 'InvalidPaginationTokenException', 'Invalid token');
      const page = listed.slice(start, start + max).map((q) => shape(service, q, action === 'ListServiceQuotas' ? q.value : q.default));
      return send(res, 200, { Quotas: page, ...(start + max < listed.length ? { NextToken: Buffer.from(`page:${start + max}`).toString('base64') } : {}) });
    }
    return fail(res, 400, 'UnknownOperationException', `${action} is not an operation this stand-in serves`);
  };

  const server = await serveOnLoopback(handle);
  const fake: FakeServiceQuotas = {
    endpoint: server.endpoint,
    services,
    deny,
    ...(opts.iam ? { iam: opts.iam } : {}),
    calls,
    close: server.close,
  };
  return fake;
}
