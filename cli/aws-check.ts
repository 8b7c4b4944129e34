// `twill aws check`: before `npx sst deploy`, reads what in this AWS account
// and the stage's settings would make the deploy or the fabric fail, and says
// so, one line a check: OK, WARN or FAIL, the reason and what to do. Exit
// codes: 0 nothing failed (warnings may remain), 1 a check failed, 2 the
// command was used wrongly. Credentials, region and endpoints come from the
// usual SDK environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_<SERVICE>).
import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { TwillError } from '../core/errors.js';
import { APP_NAME } from '../infra/settings.js';
import { parse } from './args.js';
import { assess, type Finding } from './aws-assess.js';
import { readAccount } from './aws-account.js';
import { printable } from './table.js';

export const AWS_USAGE = 'twill aws check --stage STAGE [--nodes N] [--infra DIR]';

/** Every flag twill aws check takes (its help and the README are checked against it). */
export const AWS_CHECK_OPTIONS = {
  stage: { type: 'string' },
  nodes: { type: 'string' },
  infra: { type: 'string' },
} as const;

/** infra/ of the checkout this twill runs from: beside cli/ (sources) or two up from dist/cli/ (the build). */
function defaultInfraDir(): string {
  const here = import.meta.dirname;
  const candidates = [join(here, '..', 'infra'), join(here, '..', '..', 'infra')];
  return candidates.find((d) => existsSync(join(d, 'functions.ts'))) ?? candidates[0]!;
}

export function renderFindings(findings: Finding[]): string {
  const width = Math.max(...findings.map((f) => f.check.length));
  return findings.map((f) => `${f.level.padEnd(4)}  ${f.check.padEnd(width)}  ${printable(f.text)}\n`).join('');
}

export async function awsCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (verb !== 'check') throw new TwillError('Usage', `${verb === undefined ? 'no subcommand' : `${JSON.stringify(verb)} is not a subcommand`}: expected check\nusage: ${AWS_USAGE}`);
  const { values } = parse(rest, AWS_CHECK_OPTIONS);
  const stage = values.stage ?? process.env.SST_STAGE;
  if (!stage) throw new TwillError('Usage', `name the stage you will deploy: --stage STAGE (as in npx sst deploy --stage STAGE)\nusage: ${AWS_USAGE}`);
  let nodes: number | undefined;
  if (values.nodes !== undefined) {
    if (!/^[1-9][0-9]{0,8}$/.test(values.nodes)) throw new TwillError('Usage', `--nodes ${values.nodes}: give the number of agents you plan for, e.g. --nodes 10000`);
    nodes = Number(values.nodes);
  }

  // Region and credentials first: without them every check would fail the same way.
  const probe = new LambdaClient({});
  let region: string;
  try {
    region = await probe.config.region();
    await probe.config.credentials();
  } catch (e) {
    process.stderr.write(`twill aws check: ${/region/i.test((e as Error).message) ? 'no AWS region is set: set AWS_REGION, or AWS_PROFILE with a region' : `no AWS credentials: ${(e as Error).message.split('\n')[0]}`}\n`);
    return 1;
  } finally {
    probe.destroy();
  }

  process.stdout.write(`twill aws check: app ${APP_NAME}, stage ${printable(stage)}, region ${printable(region)}\n`);
  // Shown as the user would write it: relative to here when it is below here.
  const infra = resolve(values.infra ?? defaultInfraDir());
  const shown = relative(process.cwd(), infra);
  const infraDir = shown === '' ? '.' : shown.startsWith('..') ? infra : shown;
  const facts = await readAccount({ app: APP_NAME, stage, region, infraDir, ...(nodes === undefined ? {} : { nodes }) });
  const findings = assess(facts);
  process.stdout.write(renderFindings(findings));
  const failed = findings.filter((f) => f.level === 'FAIL').length;
  const warned = findings.filter((f) => f.level === 'WARN').length;
  process.stdout.write(failed
    ? `${failed} check(s) failed: fix them before npx sst deploy --stage ${printable(stage)}\n`
    : `nothing blocks npx sst deploy --stage ${printable(stage)}${warned ? ` (${warned} warning(s))` : ''}\n`);
  return failed ? 1 : 0;
}
