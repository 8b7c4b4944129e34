// What `twill aws check` reads of an AWS account, with the real SDK clients
// and the credentials, region and endpoints of the usual SDK environment
// (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_<SERVICE>). Every read stands on
// its own: one refused or unreachable service is reported as such and the
// others are still read. Nothing here writes to the account.
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { IoTClient, DescribeEndpointCommand, ListAuthorizersCommand, ListTopicRulesCommand } from '@aws-sdk/client-iot';
import { GetAccountSettingsCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { ListAWSDefaultServiceQuotasCommand, ListServiceQuotasCommand, ServiceQuotasClient, type ServiceQuota } from '@aws-sdk/client-service-quotas';
import { SSMClient } from '@aws-sdk/client-ssm';
import { IOT_QUOTAS, type AccountFacts, type Got, type IotQuota, type IotQuotaKey } from './aws-assess.js';
import { readStageSecrets } from './sst-secrets.js';

/** No read may hang the check: a service that does not answer is reported as unreachable. */
const REQUEST_HANDLER = { connectionTimeout: 5_000, requestTimeout: 30_000 };

/** Why a call failed, for a person: refused by IAM, not reachable, or the service's own error. */
export function describeFailure(e: unknown, action: string, service: string, region: string): string {
  const err = e as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const name = err.name ?? 'Error';
  const message = (err.message ?? String(e)).replace(/\s+/g, ' ').trim();
  if (name === 'AccessDeniedException' || name === 'AccessDenied' || /is not authorized to perform/.test(message)) {
    return `these credentials may not call ${action} (${message}): allow it to the identity running the check`;
  }
  const code = err.code ?? /\b(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT)\b/.exec(message)?.[1];
  if (code || name === 'TimeoutError' || name === 'RequestTimeout') {
    return `cannot reach ${service} in ${region} (${code ?? name})`;
  }
  // twill's own findings (a sealed file without its key) are already sentences.
  return name === 'Error' ? message : `${action} failed: ${name}: ${message}`;
}

async function got<T>(action: string, service: string, region: string, read: () => Promise<T>): Promise<Got<T>> {
  try {
    return { ok: true, value: await read() };
  } catch (e) {
    return { ok: false, error: describeFailure(e, action, service, region) };
  }
}

/** The runtimes infra/ gives its functions (`runtime: 'nodejs24.x'`), read as text: infra runs only inside SST. */
export async function infraRuntimes(dir: string): Promise<{ dir: string; runtimes: string[] }> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.ts')).sort();
  } catch (e) {
    throw new Error(`no infra/ at ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const found = new Set<string>();
  for (const name of names) {
    const text = await readFile(join(dir, name), 'utf8');
    for (const m of text.matchAll(/\bruntime:\s*['"`]([a-z0-9.]+)['"`]/g)) found.add(m[1]!);
  }
  return { dir, runtimes: [...found].sort() };
}

async function pages<P extends { nextToken?: string }, T>(first: () => Promise<P>, next: (token: string) => Promise<P>, items: (page: P) => T[] | undefined): Promise<T[]> {
  const out: T[] = [];
  let page = await first();
  for (;;) {
    out.push(...(items(page) ?? []));
    if (!page.nextToken) return out;
    page = await next(page.nextToken);
  }
}

async function countRules(iot: IoTClient): Promise<number> {
  const send = (nextToken?: string) => iot.send(new ListTopicRulesCommand({ maxResults: 10_000, nextToken }));
  return (await pages(() => send(), (t) => send(t), (p) => p.rules)).length;
}

async function countAuthorizers(iot: IoTClient, status?: 'ACTIVE'): Promise<number> {
  const send = async (marker?: string) => {
    const r = await iot.send(new ListAuthorizersCommand({ pageSize: 250, marker, status }));
    return { ...r, nextToken: r.nextMarker };
  };
  return (await pages(() => send(), (t) => send(t), (p) => p.authorizers)).length;
}

/**
 * IoT Core's quotas twill depends on, matched by name. The account's applied
 * values first (ListServiceQuotas); a quota Service Quotas tracks no applied
 * value for is listed with its default only (ListAWSDefaultServiceQuotas).
 */
async function iotQuotas(sq: ServiceQuotasClient): Promise<Partial<Record<IotQuotaKey, IotQuota>>> {
  const list = async (Command: typeof ListServiceQuotasCommand | typeof ListAWSDefaultServiceQuotasCommand) => {
    const send = async (NextToken?: string) => {
      const r = await sq.send(new Command({ ServiceCode: 'iotcore', MaxResults: 100, NextToken }));
      return { ...r, nextToken: r.NextToken };
    };
    return pages(() => send(), (t) => send(t), (p) => p.Quotas);
  };
  const found: Partial<Record<IotQuotaKey, IotQuota>> = {};
  const take = (quotas: ServiceQuota[], applied: boolean) => {
    for (const key of Object.keys(IOT_QUOTAS) as IotQuotaKey[]) {
      if (found[key]) continue;
      const q = quotas.find((x) => IOT_QUOTAS[key].match.test(x.QuotaName ?? '') && typeof x.Value === 'number');
      if (q) found[key] = { code: q.QuotaCode ?? '?', name: q.QuotaName ?? '?', value: q.Value!, applied };
    }
  };
  take(await list(ListServiceQuotasCommand), true);
  if (Object.keys(found).length < Object.keys(IOT_QUOTAS).length) take(await list(ListAWSDefaultServiceQuotasCommand), false);
  return found;
}

export interface ReadOptions {
  app: string;
  stage: string;
  region: string;
  infraDir: string;
  nodes?: number;
  today?: Date;
}

export async function readAccount(o: ReadOptions): Promise<AccountFacts> {
  const config = { region: o.region, requestHandler: REQUEST_HANDLER };
  const lambda = new LambdaClient(config);
  const iot = new IoTClient(config);
  const sq = new ServiceQuotasClient(config);
  const ssm = new SSMClient(config);
  const s3 = new S3Client(config);
  try {
    const [runtimes, lambdaSettings, iotEndpoint, iotRules, iotAuthorizers, quotas, secrets] = await Promise.all([
      infraRuntimes(o.infraDir).then(
        (value): Got<{ dir: string; runtimes: string[] }> => ({ ok: true, value }),
        (e: Error): Got<{ dir: string; runtimes: string[] }> => ({ ok: false, error: e.message }),
      ),
      got('lambda:GetAccountSettings', 'Lambda', o.region, async () => {
        const r = await lambda.send(new GetAccountSettingsCommand({}));
        const quota = r.AccountLimit?.ConcurrentExecutions;
        const unreserved = r.AccountLimit?.UnreservedConcurrentExecutions;
        if (typeof quota !== 'number' || typeof unreserved !== 'number') throw new Error('GetAccountSettings gave no AccountLimit concurrency');
        return { quota, unreserved };
      }),
      got('iot:DescribeEndpoint', 'IoT Core', o.region, async () => {
        const address = (await iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }))).endpointAddress;
        if (!address) throw new Error('IoT Core gave no iot:Data-ATS endpoint address');
        return address;
      }),
      got('iot:ListTopicRules', 'IoT Core', o.region, () => countRules(iot)),
      got('iot:ListAuthorizers', 'IoT Core', o.region, async () => ({ total: await countAuthorizers(iot), active: await countAuthorizers(iot, 'ACTIVE') })),
      got('servicequotas:ListServiceQuotas', 'Service Quotas', o.region, () => iotQuotas(sq)),
      got('ssm:GetParameter and s3:GetObject (SST\'s secrets)', 'SSM and S3', o.region, () => readStageSecrets(ssm, s3, o.app, o.stage)),
    ]);
    return {
      app: o.app,
      stage: o.stage,
      region: o.region,
      today: o.today ?? new Date(),
      ...(o.nodes === undefined ? {} : { nodes: o.nodes }),
      runtimes,
      lambda: lambdaSettings,
      iotEndpoint,
      iotRules,
      iotAuthorizers,
      iotQuotas: quotas,
      secrets,
    };
  } finally {
    for (const c of [lambda, iot, sq, ssm, s3]) c.destroy();
  }
}
