// `twill aws check`, run as the twill command against stand-ins of every
// service it reads (Lambda, IoT Core's control plane, Service Quotas, SSM and
// S3 holding SST's secrets), with the real SDK clients: what a person runs
// before `npx sst deploy`, and what it must say about a healthy account, a
// new one, and each thing that would make the deploy or the fabric fail.
// Any AWS call without a stand-in goes to a closed loopback port.
import { after, afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeIotControl, type FakeIotControl } from '../fakes/iot-control.js';
import { startFakeLambda, type FakeLambda } from '../fakes/lambda.js';
import { startFakeS3, type FakeS3 } from '../fakes/s3.js';
import { startFakeServiceQuotas, type FakeQuota, type FakeServiceQuotas } from '../fakes/service-quotas.js';
import { startFakeSsm, type FakeSsm } from '../fakes/ssm.js';
import { freePort, removeTempDirs, runTwill, tempDir } from '../helpers/procs.js';

const REGION = 'us-east-1';
const STATE_BUCKET = 'sst-state-q7w8e9r0t1y2';
const ADMIN_TOKEN = 'T0k3n-for-the-aws-check-test-only-9f8e7d';

/**
 * IoT Core's quotas as this test's account has them, under the names of the
 * AWS IoT Core quotas page (the check finds each by name; the codes are this
 * fixture's, printed back as Service Quotas gives them).
 */
function iotcoreQuotas(): FakeQuota[] {
  return [
    { code: 'L-954FA751', name: 'Maximum number of rules per AWS account', value: 1000, default: 1000, adjustable: true },
    { code: 'L-78E3C43F', name: 'Custom authentication: maximum number of authorizers per account', value: 32, default: 32, adjustable: true },
    { code: 'L-0A7C0E01', name: 'Custom authentication: maximum number of active authorizers per account', value: 32, default: 32, adjustable: true },
    { code: 'L-0A7C0E02', name: 'Maximum concurrent client connections per account', value: 500_000, default: 500_000, adjustable: true },
    { code: 'L-0A7C0E03', name: 'Maximum number of retained messages per account', value: 500_000, default: 500_000, adjustable: true, applied: false },
    { code: 'L-0A7C0E04', name: 'Subscriptions per account', value: 500_000, default: 500_000, adjustable: true },
    { code: 'L-0A7C0E05', name: 'Connect requests per second per account', value: 500, default: 500, adjustable: true },
  ];
}

/** Seals a secret file as SST does: AES-256-GCM, a 12-byte nonce, then the ciphertext and its tag. */
function seal(values: Record<string, string>, key: Buffer): Buffer {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const body = Buffer.concat([cipher.update(JSON.stringify(values), 'utf8'), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

interface Account {
  lambda: FakeLambda;
  iot: FakeIotControl;
  quotas: FakeServiceQuotas;
  ssm: FakeSsm;
  s3: FakeS3;
  env: NodeJS.ProcessEnv;
  /** an infra/ whose functions run on runtime */
  infra(runtime: string): string;
  /** what `npx sst secret set` leaves for a stage (or, with stage _fallback, `--fallback`) */
  setSecrets(stage: string, values: Record<string, string>): void;
  /** SST's state object a deploy of the stage leaves */
  markDeployed(stage: string): void;
  close(): Promise<void>;
}

const open: Account[] = [];

async function startAccount(opts: { concurrency?: number } = {}): Promise<Account> {
  const lambda = await startFakeLambda({ region: REGION, ...(opts.concurrency === undefined ? {} : { concurrency: opts.concurrency }) });
  const iot = await startFakeIotControl({ region: REGION });
  const quotas = await startFakeServiceQuotas({ region: REGION });
  const ssm = await startFakeSsm();
  const s3 = await startFakeS3({ region: REGION });
  quotas.services.set('iotcore', iotcoreQuotas());
  quotas.services.set('lambda', [{ code: 'L-B99A9384', name: 'Concurrent executions', value: lambda.concurrency, default: 1000, adjustable: true }]);
  // SST's first use of the account and region made the state bucket and named it here.
  ssm.parameters.set('/sst/bootstrap', { type: 'String', value: JSON.stringify({ version: 5, asset: 'sst-asset-q7w8e9r0t1y2', state: STATE_BUCKET }) });
  s3.buckets.set(STATE_BUCKET, new Map());
  const home = tempDir('twill-aws-home-');
  const account: Account = {
    lambda, iot, quotas, ssm, s3,
    env: {
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE',
      AWS_SECRET_ACCESS_KEY: 'fake-secret-for-local-tests-only',
      AWS_SESSION_TOKEN: undefined,
      AWS_PROFILE: undefined,
      AWS_EC2_METADATA_DISABLED: 'true',
      // The host's own AWS configuration stays out of it.
      AWS_CONFIG_FILE: join(home, 'config'),
      AWS_SHARED_CREDENTIALS_FILE: join(home, 'credentials'),
      SST_STAGE: undefined,
      // Any client without a stand-in hits a closed loopback port.
      AWS_ENDPOINT_URL: `http://127.0.0.1:9`,
      AWS_ENDPOINT_URL_LAMBDA: lambda.endpoint,
      AWS_ENDPOINT_URL_IOT: iot.endpoint,
      AWS_ENDPOINT_URL_SERVICE_QUOTAS: quotas.endpoint,
      AWS_ENDPOINT_URL_SSM: ssm.endpoint,
      AWS_ENDPOINT_URL_S3: s3.endpoint,
    },
    infra(runtime) {
      const dir = join(tempDir('twill-aws-infra-'), 'infra');
      mkdirSync(dir);
      writeFileSync(join(dir, 'functions.ts'), `export const defaults = {\n  runtime: '${runtime}',\n  architecture: 'arm64',\n};\n`);
      return dir;
    },
    setSecrets(stage, values) {
      const key = randomBytes(32);
      ssm.parameters.set(`/sst/passphrase/twill/${stage}`, { type: 'SecureString', value: key.toString('base64') });
      s3.buckets.get(STATE_BUCKET)!.set(`secret/twill/${stage}.json`, seal(values, key));
    },
    markDeployed(stage) {
      s3.buckets.get(STATE_BUCKET)!.set(`app/twill/${stage}.json`, Buffer.from('{"version":3,"checkpoint":{}}'));
    },
    async close() {
      await Promise.all([lambda.close(), iot.close(), quotas.close(), ssm.close(), s3.close()]);
    },
  };
  open.push(account);
  return account;
}

/** A well-kept account: a stage with its token and alarm address, room for its rules and authorizer. */
async function healthyAccount(opts: { concurrency?: number } = {}): Promise<Account> {
  const a = await startAccount(opts);
  a.setSecrets('prod', { AdminToken: ADMIN_TOKEN, AlarmEmail: 'ops@example.com' });
  for (const name of ['other-app-rule-1', 'other-app-rule-2']) a.iot.rules.set(name, { topicPattern: `fleet/${name}` });
  a.iot.authorizers.set('other-app-authorizer', { status: 'ACTIVE' });
  return a;
}

async function check(a: Account, args: string[]) {
  const r = await runTwill(['aws', 'check', ...args], a.env);
  return { ...r, lines: r.stdout.split('\n').filter((l) => /^(OK|WARN|FAIL)\s/.test(l)) };
}

/** The lines of one check, e.g. 'lambda'. */
const linesOf = (lines: string[], name: string) => lines.filter((l) => new RegExp(`^(OK|WARN|FAIL)\\s+${name}\\s`).test(l));

describe('twill aws check', () => {
  afterEach(async () => {
    for (const a of open.splice(0)) await a.close();
  });
  after(() => removeTempDirs());

  test('a healthy account: every check OK, exit 0, and no secret in the output', async () => {
    const a = await healthyAccount();
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^twill aws check: app twill, stage prod, region us-east-1$/m);
    assert.deepEqual(r.lines.filter((l) => !l.startsWith('OK')), [], r.stdout);
    assert.match(linesOf(r.lines, 'runtime')[0] ?? '', /nodejs24\.x, supported until 2028-04-30/);
    assert.match(linesOf(r.lines, 'lambda')[0] ?? '', /concurrency quota 1,000, 1,000 unreserved; the stage reserves none/);
    assert.match(linesOf(r.lines, 'iot endpoint')[0] ?? '', new RegExp(`${a.iot.identifier}-ats\\.iot\\.us-east-1\\.amazonaws\\.com`));
    assert.match(r.stdout, /2 of 1,000 topic rules in use; the stage adds 2/);
    assert.match(r.stdout, /1 of 32 custom authorizers in use; the stage adds 1/);
    assert.match(r.stdout, /set for stage prod: AdminToken, AlarmEmail; the others have their defaults/);
    assert.match(r.stdout, /nothing blocks npx sst deploy --stage prod$/m);
    // The token was read (it is "set"), and shown nowhere.
    assert.ok(!(r.stdout + r.stderr).includes(ADMIN_TOKEN), 'the admin token is not printed');
    // It read, and changed nothing: no write was made to any service.
    assert.deepEqual(a.lambda.calls, ['GetAccountSettings']);
    assert.ok(a.s3.calls.every((c) => c.action === 'GetObject' || c.action === 'HeadObject'));
  });

  test('a new account (concurrency quota 10) deploys with the defaults: a warning naming the quota, no failure', async () => {
    const a = await healthyAccount({ concurrency: 10 });
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const [lambda] = linesOf(r.lines, 'lambda');
    assert.match(lambda ?? '', /^WARN\s+lambda\s+the account's concurrency quota is 10 \(Lambda's default is 1,000/);
    assert.match(lambda ?? '', /L-B99A9384/);
  });

  test('a new account (quota 10) with a stage that reserves concurrency fails, naming the quota and the concurrency it needs', async () => {
    const a = await healthyAccount({ concurrency: 10 });
    a.setSecrets('prod', { AdminToken: ADMIN_TOKEN, AlarmEmail: 'ops@example.com', AuthorizerConcurrency: '50', AgentMessagesConcurrency: '100' });
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const [lambda] = linesOf(r.lines, 'lambda');
    assert.match(lambda ?? '', /^FAIL\s+lambda\s+the stage reserves 150 executions \(AuthorizerConcurrency 50 \+ AgentMessagesConcurrency 100\)/);
    assert.match(lambda ?? '', /must be at least 250: it is 10/);
    assert.match(lambda ?? '', /"Concurrent executions" to at least 250 \(Service Quotas, code L-B99A9384\)/);
    assert.match(lambda ?? '', /npx sst secret set AuthorizerConcurrency none --stage prod; npx sst secret set AgentMessagesConcurrency none --stage prod/);
    assert.match(r.stdout, /^1 check\(s\) failed: fix them before npx sst deploy --stage prod$/m);
  });

  test("reserving what other functions' reservations leave too little of fails on a first deploy and warns on a redeploy", async () => {
    const a = await healthyAccount({ concurrency: 400 });
    a.lambda.reserve('some-other-app', 150);
    a.setSecrets('prod', { AdminToken: ADMIN_TOKEN, AlarmEmail: 'ops@example.com', AuthorizerConcurrency: '200' });
    const first = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(first.code, 1, first.stdout);
    const [line] = linesOf(first.lines, 'lambda');
    assert.match(line ?? '', /^FAIL\s+lambda\s+the stage reserves 200 executions \(AuthorizerConcurrency 200\); 250 of the account's 400 are unreserved, and reserving them would leave 50, under the 100/);
    assert.match(line ?? '', /free 50 reserved by other functions, or request an increase of Lambda's "Concurrent executions" to at least 450/);

    a.markDeployed('prod');
    const again = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(again.code, 0, again.stdout);
    assert.match(linesOf(again.lines, 'lambda')[0] ?? '', /^WARN\s+lambda\s.*unless this stage's functions already hold the difference/);
  });

  test('a stage that never set AdminToken fails, naming it and the command that sets it', async () => {
    const a = await startAccount();
    const r = await check(a, ['--stage', 'staging', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const failed = r.lines.filter((l) => l.startsWith('FAIL'));
    assert.equal(failed.length, 1, r.stdout);
    assert.match(failed[0]!, /^FAIL\s+settings\s+AdminToken is not set and has no default .*SecretMissingError: npx sst secret set AdminToken "\$\(openssl rand -base64 32\)" --stage staging$/);
    // AlarmEmail has its default: a warning that alarms reach no one, not a failure.
    assert.match(r.stdout, /^WARN\s+settings\s+AlarmEmail is none: .*npx sst secret set AlarmEmail you@example\.com --stage staging, then confirm the mail$/m);
  });

  test('a value set with --fallback counts for a stage that sets none of its own', async () => {
    const a = await startAccount();
    a.setSecrets('_fallback', { AdminToken: ADMIN_TOKEN, AlarmEmail: 'ops@example.com' });
    const r = await check(a, ['--stage', 'pr-42', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(linesOf(r.lines, 'settings').filter((l) => !l.startsWith('OK')), []);
  });

  test('settings a deploy would refuse fail, each named with what it must be', async () => {
    const a = await healthyAccount();
    a.setSecrets('prod', { AdminToken: 'short', AlarmEmail: 'ops-at-example', AuthorizerConcurrency: 'lots', MonthlyBudgetUsd: '-5' });
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 1, r.stdout);
    const settings = linesOf(r.lines, 'settings').join('\n');
    assert.match(settings, /FAIL\s+settings\s+AdminToken is 5 characters long: use at least 16/);
    assert.match(settings, /FAIL\s+settings\s+AlarmEmail must be none or an email address, not "ops-at-example"/);
    assert.match(settings, /FAIL\s+settings\s+AuthorizerConcurrency must be none \(no reservation\) or a whole number of concurrent executions such as 50, not "lots"/);
    assert.match(settings, /FAIL\s+settings\s+MonthlyBudgetUsd must be an amount of USD above 0 such as 50, not "-5"/);
    assert.ok(!r.stdout.includes('"short"'), 'a bad token is not echoed');
  });

  test('secrets the passphrase does not open are reported, not trusted: the settings are checked as their defaults', async () => {
    const a = await healthyAccount();
    // A passphrase replaced after the secrets were sealed: SST itself could not open them.
    a.ssm.parameters.set('/sst/passphrase/twill/prod', { type: 'SecureString', value: randomBytes(32).toString('base64') });
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.match(r.stdout, /^WARN\s+settings\s+cannot read the stage's secrets \(cannot open s3:\/\/sst-state-q7w8e9r0t1y2\/secret\/twill\/prod\.json with \/sst\/passphrase\/twill\/prod/m);
    assert.match(r.stdout, /^WARN\s+settings\s+AdminToken is not known to be set/m);
  });

  test('no IoT Core in the region: the endpoint check fails, naming IoT Core and the region', async () => {
    const a = await healthyAccount();
    const dead = `http://127.0.0.1:${await freePort()}`;
    const gone = await runTwill(['aws', 'check', '--stage', 'prod', '--infra', a.infra('nodejs24.x')], { ...a.env, AWS_ENDPOINT_URL_IOT: dead });
    assert.equal(gone.code, 1, gone.stdout);
    assert.match(gone.stdout, /^FAIL\s+iot endpoint\s+cannot reach IoT Core in us-east-1 \(ECONNREFUSED\); .*the stage's region must offer AWS IoT Core$/m);
    assert.match(gone.stdout, /^WARN\s+iot quotas\s+cannot count the account's topic rules, custom authorizers, active custom authorizers: cannot reach IoT Core/m);
  });

  test('credentials that may not call iot:DescribeEndpoint fail the endpoint check, naming the action', async () => {
    const a = await healthyAccount();
    a.iot.deny.add('iot:DescribeEndpoint');
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(linesOf(r.lines, 'iot endpoint')[0] ?? '', /^FAIL\s+iot endpoint\s+these credentials may not call iot:DescribeEndpoint \(User: .* is not authorized to perform: iot:DescribeEndpoint/);
  });

  test("an account at its topic rule quota fails a first deploy, naming the quota, and not a redeploy of the stage's own rules", async () => {
    const a = await healthyAccount();
    for (let i = 0; i < 998; i++) a.iot.rules.set(`r${String(i).padStart(4, '0')}`, { topicPattern: `t/${i}` });
    const r = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /^FAIL\s+iot quotas\s+1,000 of the account's 1,000 topic rules are in use \("Maximum number of rules per AWS account", Service Quotas iotcore L-954FA751\) and the stage adds 2/m);
    a.markDeployed('prod');
    const again = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x')]);
    assert.match(again.stdout, /^OK\s+iot quotas\s+1,000 of 1,000 topic rules in use; the stage has its own already$/m);
  });

  test('the agents the IoT quotas hold, against --nodes: the scarcest quota is named, with the one listed only by its default', async () => {
    const a = await healthyAccount();
    const ok = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x'), '--nodes', '10000']);
    assert.match(ok.stdout, /^OK\s+iot capacity\s+the account's quotas hold 166,666 agents in all: connections 500,000 \(500,000 agents\), retained messages 500,000 \(250,000 agents\), subscriptions 500,000 \(166,666 agents\); all 10,000 reconnecting at once take at least 20 s at 500 CONNECTs a second$/m);
    const big = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs24.x'), '--nodes', '200000']);
    assert.equal(big.code, 0, big.stdout);
    assert.match(big.stdout, /^WARN\s+iot capacity\s+200,000 agents need more subscriptions than the account's 500,000 \("Subscriptions per account", Service Quotas iotcore L-0A7C0E04\)/m);
  });

  test('a runtime Lambda deprecated fails; the checkout\'s own infra/ is read when --infra is not given', async () => {
    const a = await healthyAccount();
    const old = await check(a, ['--stage', 'prod', '--infra', a.infra('nodejs20.x')]);
    assert.equal(old.code, 1, old.stdout);
    assert.match(linesOf(old.lines, 'runtime')[0] ?? '', /^FAIL\s+runtime\s+nodejs20\.x \(.*infra\) was deprecated on 2026-04-30: .*use nodejs24\.x$/);
    const own = await runTwill(['aws', 'check', '--stage', 'prod'], a.env);
    assert.match(own.stdout, /^(OK|WARN|FAIL)\s+runtime\s+nodejs\d+\.x(, supported until| \(infra\))/m);
  });

  test('usage: the stage is required, --nodes is a count, and aws takes only check', async () => {
    const a = await startAccount();
    const none = await runTwill(['aws', 'check'], a.env);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /name the stage you will deploy: --stage STAGE/);
    const nodes = await runTwill(['aws', 'check', '--stage', 'prod', '--nodes', 'many'], a.env);
    assert.equal(nodes.code, 2);
    assert.match(nodes.stderr, /--nodes many: give the number of agents you plan for/);
    const verb = await runTwill(['aws', 'deploy'], a.env);
    assert.equal(verb.code, 2);
    assert.match(verb.stderr, /"deploy" is not a subcommand: expected check/);
    const region = await runTwill(['aws', 'check', '--stage', 'prod'], { ...a.env, AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined });
    assert.equal(region.code, 1);
    assert.match(region.stderr, /no AWS region is set: set AWS_REGION/);
    // Nothing was called while the command could not run.
    assert.deepEqual(a.lambda.calls, []);
  });
});
