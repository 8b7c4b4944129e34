// What `twill aws check` concludes from what it read of an account: pure, one
// finding per check (OK, WARN or FAIL, the reason, and what to do), so that
// every rule is written once and apart from the calls that feed it
// (cli/aws-account.ts).
import {
  LAMBDA_UNRESERVED_MINIMUM, NONE, RESERVED_CONCURRENCY, SETTINGS, reservedExecutions, stageProblem, type Setting,
} from '../infra/settings.js';

/** What a read gave: its value, or why there is none (already worded for a person). */
export type Got<T> = { ok: true; value: T } | { ok: false; error: string };

/** An IoT Core quota the fabric depends on, as Service Quotas lists it. */
export interface IotQuota {
  code: string;
  name: string;
  value: number;
  /** false: only the default is listed (ListAWSDefaultServiceQuotas), not the account's applied value */
  applied: boolean;
}

export type IotQuotaKey = keyof typeof IOT_QUOTAS;

export interface AccountFacts {
  app: string;
  stage: string;
  region: string;
  today: Date;
  /** the fabric's size the operator plans for (--nodes), if said */
  nodes?: number;
  /** the Lambda runtimes infra/ names, and where it looked */
  runtimes: Got<{ dir: string; runtimes: string[] }>;
  /** GetAccountSettings */
  lambda: Got<{ quota: number; unreserved: number }>;
  /** DescribeEndpoint iot:Data-ATS */
  iotEndpoint: Got<string>;
  /** ListTopicRules, ListAuthorizers (all, and ACTIVE) */
  iotRules: Got<number>;
  iotAuthorizers: Got<{ total: number; active: number }>;
  /** Service Quotas for iotcore, by what the fabric uses them for */
  iotQuotas: Got<Partial<Record<IotQuotaKey, IotQuota>>>;
  /** the stage's secrets as `sst deploy` would read them (cli/sst-secrets.ts) */
  secrets: Got<{ values: ReadonlyMap<string, string>; deployed: boolean }>;
}

export type Level = 'OK' | 'WARN' | 'FAIL';
export interface Finding {
  level: Level;
  check: string;
  text: string;
}

/**
 * Lambda's Node.js runtimes and the day each is deprecated ("Lambda runtimes",
 * AWS Lambda Developer Guide): from then on Lambda no longer patches it, and
 * soon after it blocks creating functions with it, which is what a deploy does.
 */
export const LAMBDA_RUNTIMES: Record<string, { deprecated: string }> = {
  'nodejs18.x': { deprecated: '2025-09-01' },
  'nodejs20.x': { deprecated: '2026-04-30' },
  'nodejs22.x': { deprecated: '2027-04-30' },
  'nodejs24.x': { deprecated: '2028-04-30' },
};
/** Warned this long before a runtime's deprecation. */
const RUNTIME_NOTICE_DAYS = 180;

/** Below Lambda's default concurrency quota ("Lambda quotas": 1,000; new accounts start lower). */
export const LAMBDA_DEFAULT_CONCURRENCY = 1000;
/** Service Quotas' code for Lambda's "Concurrent executions", to ask for an increase with. */
export const LAMBDA_CONCURRENCY_QUOTA_CODE = 'L-B99A9384';

/**
 * The IoT Core quotas twill relies on ("AWS IoT Core endpoints and quotas",
 * AWS General Reference), found in Service Quotas (service code iotcore) by
 * name, since Service Quotas gives each its code: what one stage adds, or
 * what one agent uses.
 */
export const IOT_QUOTAS = {
  rules: { match: /rules per (aws )?account/i, label: 'topic rules', stageAdds: 2 },
  authorizers: { match: /(?<!active )authorizers per account/i, label: 'custom authorizers', stageAdds: 1 },
  activeAuthorizers: { match: /active authorizers per account/i, label: 'active custom authorizers', stageAdds: 1 },
  // Per agent: one connection; its lease and its status retained (the
  // network's config is one per network); three exact subscriptions.
  connections: { match: /concurrent (client )?connections per account/i, label: 'connections', perAgent: 1 },
  retained: { match: /retained messages per account/i, label: 'retained messages', perAgent: 2 },
  subscriptions: { match: /^subscriptions per account/i, label: 'subscriptions', perAgent: 3 },
  connectRate: { match: /connect requests per second per account/i, label: 'CONNECTs a second' },
} as const;

const num = (n: number) => n.toLocaleString('en-US');
const set = (stage: string, name: string, value: string) => `npx sst secret set ${name} ${value} --stage ${stage}`;

function daysBetween(from: Date, to: string): number {
  return Math.floor((Date.parse(`${to}T00:00:00Z`) - from.getTime()) / 86_400_000);
}

function runtimeFindings(f: AccountFacts): Finding[] {
  if (!f.runtimes.ok) return [{ level: 'WARN', check: 'runtime', text: `${f.runtimes.error}: the functions' runtime is not checked (run the check from the checkout you deploy, or give --infra DIR)` }];
  const { dir, runtimes } = f.runtimes.value;
  if (runtimes.length === 0) return [{ level: 'WARN', check: 'runtime', text: `${dir} names no runtime: the functions get SST's default; name a supported one (nodejs24.x)` }];
  return runtimes.map((runtime): Finding => {
    const known = LAMBDA_RUNTIMES[runtime];
    if (!known) return { level: 'WARN', check: 'runtime', text: `${runtime} (${dir}) is not a Node.js runtime twill knows: check it on Lambda's runtimes page` };
    const days = daysBetween(f.today, known.deprecated);
    if (days <= 0) {
      return { level: 'FAIL', check: 'runtime', text: `${runtime} (${dir}) was deprecated on ${known.deprecated}: Lambda no longer patches it and blocks creating functions with it; use nodejs24.x` };
    }
    if (days <= RUNTIME_NOTICE_DAYS) return { level: 'WARN', check: 'runtime', text: `${runtime} (${dir}) is deprecated on ${known.deprecated}, in ${days} days: move to nodejs24.x` };
    return { level: 'OK', check: 'runtime', text: `${runtime}, supported until ${known.deprecated}` };
  });
}

/** Each setting's value as a deploy would see it: the stage's, else its default. */
function effective(f: AccountFacts): Map<string, string | undefined> {
  const values = f.secrets.ok ? f.secrets.value.values : new Map<string, string>();
  return new Map(Object.values(SETTINGS).map((s: Setting) => [s.name, values.get(s.name) ?? s.default]));
}

function settingFindings(f: AccountFacts): Finding[] {
  const out: Finding[] = [];
  const stageBad = stageProblem(f.app, f.stage);
  if (stageBad) out.push({ level: 'FAIL', check: 'stage', text: stageBad });
  const values = effective(f);
  if (!f.secrets.ok) {
    out.push({ level: 'WARN', check: 'settings', text: `cannot read the stage's secrets (${f.secrets.error}): checked as if every setting had its default` });
  }
  const stageValues = f.secrets.ok ? f.secrets.value.values : new Map<string, string>();
  for (const s of Object.values(SETTINGS) as Setting[]) {
    const value = values.get(s.name);
    if (value === undefined) {
      const example = s.name === 'AdminToken' ? '"$(openssl rand -base64 32)"' : 'VALUE';
      out.push({ level: f.secrets.ok ? 'FAIL' : 'WARN', check: 'settings', text: `${s.name} is ${f.secrets.ok ? 'not set' : 'not known to be set'} and has no default (${s.what}); a deploy without it stops with SecretMissingError: ${set(f.stage, s.name, example)}` });
      continue;
    }
    const problem = s.problem?.(value);
    if (problem) out.push({ level: 'FAIL', check: 'settings', text: `${s.name} ${problem}: ${set(f.stage, s.name, 'VALUE')}` });
  }
  if (values.get(SETTINGS.alarmEmail.name) === NONE) {
    out.push({ level: 'WARN', check: 'settings', text: `AlarmEmail is none: alarms and budget warnings reach the SNS topic only, and no one reads it: ${set(f.stage, 'AlarmEmail', 'you@example.com')}, then confirm the mail` });
  }
  if (f.secrets.ok && !out.some((x) => x.check === 'settings' && x.level === 'FAIL')) {
    const given = (Object.values(SETTINGS) as Setting[]).filter((s) => stageValues.has(s.name)).map((s) => s.name);
    out.push({ level: 'OK', check: 'settings', text: `set for stage ${f.stage}: ${given.join(', ') || 'none'}; the others have their defaults` });
  }
  return out;
}

function lambdaFindings(f: AccountFacts): Finding[] {
  const values = effective(f);
  const parts: string[] = [];
  let reserved = 0;
  for (const key of RESERVED_CONCURRENCY) {
    const s = SETTINGS[key];
    try {
      const n = reservedExecutions(s, values.get(s.name) ?? NONE);
      if (n > 0) parts.push(`${s.name} ${n}`);
      reserved += n;
    } catch {
      // a bad value is a settings finding already
    }
  }
  if (!f.lambda.ok) return [{ level: 'FAIL', check: 'lambda', text: f.lambda.error }];
  const { quota, unreserved } = f.lambda.value;
  const increase = (to: number) => `request an increase of Lambda's "Concurrent executions" to at least ${num(to)} (Service Quotas, code ${LAMBDA_CONCURRENCY_QUOTA_CODE})`;
  if (reserved === 0) {
    if (quota < LAMBDA_DEFAULT_CONCURRENCY) {
      return [{ level: 'WARN', check: 'lambda', text: `the account's concurrency quota is ${num(quota)} (Lambda's default is ${num(LAMBDA_DEFAULT_CONCURRENCY)}; new accounts start lower): the deploy works, but every function shares ${num(unreserved)} executions, so a join storm's hellos queue and retry and a throttled authorizer refuses CONNECTs until agents retry; ${increase(LAMBDA_DEFAULT_CONCURRENCY)}` }];
    }
    return [{ level: 'OK', check: 'lambda', text: `concurrency quota ${num(quota)}, ${num(unreserved)} unreserved; the stage reserves none` }];
  }
  const needed = reserved + LAMBDA_UNRESERVED_MINIMUM;
  const what = parts.join(' + ');
  if (quota < needed) {
    const unset = parts.map((p) => set(f.stage, p.split(' ')[0]!, NONE)).join('; ');
    return [{ level: 'FAIL', check: 'lambda', text: `the stage reserves ${num(reserved)} executions (${what}) and Lambda keeps ${LAMBDA_UNRESERVED_MINIMUM} unreserved, so the account's concurrency quota must be at least ${num(needed)}: it is ${num(quota)}. Either ${increase(needed)}, or reserve nothing: ${unset}` }];
  }
  if (unreserved - reserved < LAMBDA_UNRESERVED_MINIMUM) {
    const deployed = f.secrets.ok && f.secrets.value.deployed;
    const text = `the stage reserves ${num(reserved)} executions (${what}); ${num(unreserved)} of the account's ${num(quota)} are unreserved, and reserving them would leave ${num(unreserved - reserved)}, under the ${LAMBDA_UNRESERVED_MINIMUM} Lambda keeps unreserved`;
    const fix = `free ${num(LAMBDA_UNRESERVED_MINIMUM + reserved - unreserved)} reserved by other functions, or ${increase(quota - unreserved + needed)}`;
    return deployed
      ? [{ level: 'WARN', check: 'lambda', text: `${text}, unless this stage's functions already hold the difference (it was deployed before); if not, ${fix}` }]
      : [{ level: 'FAIL', check: 'lambda', text: `${text}: ${fix}` }];
  }
  return [{ level: 'OK', check: 'lambda', text: `concurrency quota ${num(quota)}, ${num(unreserved)} unreserved; the stage reserves ${num(reserved)} (${what}), leaving ${num(unreserved - reserved)}` }];
}

function iotFindings(f: AccountFacts): Finding[] {
  const out: Finding[] = [];
  out.push(f.iotEndpoint.ok
    ? { level: 'OK', check: 'iot endpoint', text: `${f.iotEndpoint.value} (agents connect to wss://${f.iotEndpoint.value}/mqtt)` }
    : { level: 'FAIL', check: 'iot endpoint', text: `${f.iotEndpoint.error}; the functions publish to the account's IoT Core data endpoint (iot:Data-ATS) and agents connect to it, so the stage's region must offer AWS IoT Core` });

  const quotas = f.iotQuotas.ok ? f.iotQuotas.value : {};
  if (!f.iotQuotas.ok) out.push({ level: 'WARN', check: 'iot quotas', text: `${f.iotQuotas.error}: IoT Core's quotas are not checked` });
  const deployed = f.secrets.ok && f.secrets.value.deployed;
  const usage = (['rules', 'authorizers', 'activeAuthorizers'] as const).map((key) => {
    const used: Got<number> = key === 'rules' ? f.iotRules : f.iotAuthorizers.ok ? { ok: true, value: f.iotAuthorizers.value[key === 'authorizers' ? 'total' : 'active'] } : f.iotAuthorizers;
    return { key, used };
  });
  const uncounted = [...new Set(usage.flatMap(({ used }) => (used.ok ? [] : [used.error])))];
  if (uncounted.length) {
    const labels = usage.filter(({ used }) => !used.ok).map(({ key }) => IOT_QUOTAS[key].label).join(', ');
    out.push({ level: 'WARN', check: 'iot quotas', text: `cannot count the account's ${labels}: ${uncounted.join('; ')}` });
  }
  for (const { key, used } of usage) {
    const q = quotas[key];
    const d = IOT_QUOTAS[key];
    const adds = deployed ? 0 : d.stageAdds;
    const addsText = deployed ? 'the stage has its own already' : `the stage adds ${d.stageAdds}`;
    if (!used.ok) continue;
    if (!q) {
      if (f.iotQuotas.ok) out.push({ level: 'WARN', check: 'iot quotas', text: `Service Quotas lists no quota for IoT Core's ${d.label} here: ${num(used.value)} in use, ${addsText}; compare with AWS IoT Core's quotas page` });
      continue;
    }
    const source = `"${q.name}", Service Quotas iotcore ${q.code}${q.applied ? '' : ', default'}`;
    if (used.value + adds > q.value) {
      out.push({ level: 'FAIL', check: 'iot quotas', text: `${num(used.value)} of the account's ${num(q.value)} ${d.label} are in use (${source}) and ${addsText}: delete unused ones or request an increase` });
    } else {
      out.push({ level: 'OK', check: 'iot quotas', text: `${num(used.value)} of ${num(q.value)} ${d.label} in use; ${addsText}` });
    }
  }

  if (f.iotQuotas.ok) {
    // How many agents the account's quotas hold, all stages of the account together.
    const capacity: { label: string; agents: number; q: IotQuota }[] = [];
    for (const key of ['connections', 'retained', 'subscriptions'] as const) {
      const q = quotas[key];
      if (q) capacity.push({ label: IOT_QUOTAS[key].label, agents: Math.floor(q.value / IOT_QUOTAS[key].perAgent), q });
    }
    const missing = (['connections', 'retained', 'subscriptions', 'connectRate'] as const).filter((k) => !quotas[k]).map((k) => IOT_QUOTAS[k].label);
    if (missing.length) out.push({ level: 'WARN', check: 'iot capacity', text: `Service Quotas lists no IoT Core quota for ${missing.join(', ')} here: compare with AWS IoT Core's quotas page` });
    if (capacity.length) {
      const least = capacity.reduce((a, b) => (b.agents < a.agents ? b : a));
      const listing = capacity.map((c) => `${c.label} ${num(c.q.value)} (${num(c.agents)} agents)`).join(', ');
      const rate = quotas.connectRate;
      const reconnect = rate && f.nodes ? `; all ${num(f.nodes)} reconnecting at once take at least ${num(Math.ceil(f.nodes / rate.value))} s at ${num(rate.value)} ${IOT_QUOTAS.connectRate.label}` : '';
      if (f.nodes !== undefined && f.nodes > least.agents) {
        out.push({ level: 'WARN', check: 'iot capacity', text: `${num(f.nodes)} agents need more ${least.label} than the account's ${num(least.q.value)} ("${least.q.name}", Service Quotas iotcore ${least.q.code}): request an increase; ${listing}${reconnect}` });
      } else {
        out.push({ level: 'OK', check: 'iot capacity', text: `the account's quotas hold ${num(least.agents)} agents in all: ${listing}${reconnect}` });
      }
    }
  }
  return out;
}

/** Every finding, in the order a person fixes them: what blocks the deploy first. */
export function assess(f: AccountFacts): Finding[] {
  return [...runtimeFindings(f), ...settingFindings(f), ...lambdaFindings(f), ...iotFindings(f)];
}
