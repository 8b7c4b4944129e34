// The SST program, checked offline: `sst install` fetches SST's platform and
// the AWS provider from the npm registry into .sst/ (once; ~30 s), then tsc
// checks sst.config.ts and infra/ against them (tsconfig.sst.json; the main
// tsconfig never sees them, since they run only inside SST). Also: a wrong
// type in infra really fails that check, the table infra declares is the one
// the store expects, and every Lambda handler bundles the way SST bundles it
// (ESM, code splitting) without pulling a cloud SDK into its cold start.
// Nothing here talks to AWS: no deploy, no diff, telemetry off.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GSI1, TTL_ATTRIBUTE, tableDefinition } from '../../control/store/dynamo.js';
import { TABLE_SCHEMA } from '../../infra/schema.js';
import { FUNCTIONS } from '../../infra/grants.js';
import { ROOT, removeTempDirs, tempDir } from '../helpers/procs.js';

const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const SST_ENV = {
  ...process.env,
  SST_SKIP_DEPENDENCY_CHECK: '1',
  SST_NO_BUN: '1',
  SST_STAGE: 'dev',
  SST_TELEMETRY_DISABLED: '1',
  // Never a real account: SST's install step has no need of one.
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_ACCESS_KEY_ID: undefined,
  AWS_SECRET_ACCESS_KEY: undefined,
  AWS_PROFILE: undefined,
} as NodeJS.ProcessEnv;

function run(cmd: string, args: string[], timeoutMs: number): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd: ROOT, env: SST_ENV, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}` };
}

describe('SST program', () => {
  after(() => removeTempDirs());

  before(() => {
    if (existsSync(join(ROOT, '.sst/platform/config.d.ts'))) return;
    // SST writes a log file into the temp dir: one of ours, removed afterwards.
    SST_ENV.TMPDIR = tempDir('twill-sst-tmp-');
    const r = run(process.execPath, [join(ROOT, 'node_modules/sst/bin/sst.mjs'), 'install'], 300_000);
    assert.equal(r.code, 0, `sst install failed:\n${r.out}`);
    assert.ok(existsSync(join(ROOT, '.sst/platform/config.d.ts')), `sst install left no .sst/platform:\n${r.out}`);
  });

  test('sst.config.ts and infra/ type-check against the installed platform and provider', () => {
    const r = run(process.execPath, [TSC, '-p', 'tsconfig.sst.json'], 300_000);
    assert.equal(r.code, 0, `tsc -p tsconfig.sst.json:\n${r.out}`);
  });

  test('a wrong type in infra fails the check', () => {
    // A copy of the check with one bad file added: the real files stay untouched.
    const dir = tempDir('twill-sst-probe-');
    writeFileSync(join(dir, 'probe.ts'), "export const bad = new sst.aws.Dynamo('Probe', { fields: { pk: 'text' }, primaryIndex: { hashKey: 'pk' } });\n");
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: join(ROOT, 'tsconfig.sst.json'), include: [join(ROOT, 'sst.config.ts'), join(ROOT, 'infra/**/*.ts'), join(ROOT, '.sst/platform/config.d.ts'), join(dir, 'probe.ts')] }));
    const r = run(process.execPath, [TSC, '-p', join(dir, 'tsconfig.json')], 300_000);
    assert.notEqual(r.code, 0, 'tsc accepted a wrong type');
    assert.match(r.out, /probe\.ts\(1,\d+\): error TS2322: Type '"text"' is not assignable/);
    assert.doesNotMatch(r.out.replace(/.*probe\.ts.*\n?/g, ''), /error TS/, 'only the probe is wrong');
  });

  test('the main type-check does not include the SST program', () => {
    const r = run(process.execPath, [TSC, '-p', 'tsconfig.json', '--listFilesOnly'], 300_000);
    assert.equal(r.code, 0, r.out);
    const ours = r.out.split('\n').filter((f) => f.startsWith(ROOT) && !f.includes('/node_modules/'));
    assert.ok(!ours.some((f) => f.endsWith('/sst.config.ts') || f.includes('/.sst/')), 'sst.config.ts is not in tsconfig.json');
    // infra/schema.ts, infra/settings.ts and infra/grants.ts are plain data (the tests and twill aws check import them); nothing else of infra is.
    assert.deepEqual(ours.filter((f) => f.includes('/infra/')).map((f) => f.slice(ROOT.length + 1)).sort(), ['infra/grants.ts', 'infra/schema.ts', 'infra/settings.ts']);
  });

  test("the table infra declares is the store's", () => {
    const def = tableDefinition('t');
    const type = { string: 'S', number: 'N', binary: 'B' } as const;
    assert.deepEqual(
      Object.entries(TABLE_SCHEMA.fields).map(([name, t]) => ({ AttributeName: name, AttributeType: type[t] })).sort((a, b) => a.AttributeName.localeCompare(b.AttributeName)),
      [...(def.AttributeDefinitions ?? [])].sort((a, b) => (a.AttributeName ?? '').localeCompare(b.AttributeName ?? '')),
    );
    assert.deepEqual(def.KeySchema, [
      { AttributeName: TABLE_SCHEMA.primaryIndex.hashKey, KeyType: 'HASH' },
      { AttributeName: TABLE_SCHEMA.primaryIndex.rangeKey, KeyType: 'RANGE' },
    ]);
    const [gsi] = def.GlobalSecondaryIndexes ?? [];
    assert.equal(gsi?.IndexName, GSI1);
    const declared = TABLE_SCHEMA.globalIndexes[GSI1 as 'gsi1'];
    assert.deepEqual(gsi?.KeySchema, [
      { AttributeName: declared.hashKey, KeyType: 'HASH' },
      { AttributeName: declared.rangeKey, KeyType: 'RANGE' },
    ]);
    assert.equal(gsi?.Projection?.ProjectionType, declared.projection === 'keys-only' ? 'KEYS_ONLY' : 'ALL');
    assert.equal(TABLE_SCHEMA.ttl, TTL_ATTRIBUTE);
    assert.equal(def.BillingMode, 'PAY_PER_REQUEST');
  });

  test("every function's IAM permissions come from the grants table the stand-ins enforce, and every entry of it is granted", () => {
    // Each `permissions` in infra is permissions('<Function>'[, values of resources made later]) (infra/functions.ts fills
    // infra/grants.ts in): no statement written elsewhere, so what the tests enforce is what deploys.
    const used: string[] = [];
    for (const f of readdirSync(join(ROOT, 'infra')).filter((n) => n.endsWith('.ts'))) {
      const text = readFileSync(join(ROOT, 'infra', f), 'utf8');
      for (const m of text.matchAll(/\bpermissions\s*[:=]\s*([^,;\n]+)/g)) {
        // (the capture ends at a first comma: permissions('Push', { eventsQueue }) reads permissions('Push')
        const fn = /^permissions\('(\w+)'(?:\)$|$)/.exec(m[1]!.trim())?.[1];
        assert.ok(fn, `infra/${f}: permissions ${m[1]} is not drawn from infra/grants.ts`);
        used.push(fn);
      }
    }
    assert.deepEqual([...new Set(used)].sort(), [...FUNCTIONS].sort(), 'each function of the table is granted, and only those');
  });

  test('every handler bundles as SST bundles it, and no cloud SDK loads on its cold start', async () => {
    const esbuild = await import('esbuild');
    const handlers = readdirSync(join(ROOT, 'functions')).filter((f) => f.endsWith('.ts'));
    const outdir = tempDir('twill-bundle-');
    const r = await esbuild.build({
      entryPoints: handlers.map((h) => join(ROOT, 'functions', h)),
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node24',
      outdir,
      metafile: true,
      logLevel: 'silent',
      banner: { js: "import { createRequire as topLevelCreateRequire } from 'module'; const require = topLevelCreateRequire(import.meta.url);" },
    });
    assert.deepEqual(r.errors, []);
    const outputs = r.metafile.outputs;
    // What a handler's module loads before its first line runs: static imports, transitively.
    const staticClosure = (out: string, seen = new Set<string>()): Set<string> => {
      if (seen.has(out)) return seen;
      seen.add(out);
      for (const i of outputs[out]?.imports ?? []) if (i.kind === 'import-statement' && outputs[i.path]) staticClosure(i.path, seen);
      return seen;
    };
    let checked = 0;
    for (const [out, meta] of Object.entries(outputs)) {
      // Dynamic imports get chunks with entry points of their own; only the handlers' count here.
      if (!meta.entryPoint?.startsWith('functions/')) continue;
      const inputs = [...staticClosure(out)].flatMap((o) => Object.keys(outputs[o]?.inputs ?? {}));
      for (const sdk of ['@google-cloud/compute', '@alicloud/pop-core', 'better-sqlite3', '@aws-sdk/client-ec2']) {
        assert.ok(!inputs.some((i) => i.includes(`node_modules/${sdk}/`)), `${meta.entryPoint} loads ${sdk} at cold start`);
      }
      checked++;
    }
    assert.equal(checked, handlers.length);
  });

  test('sst.config.ts and infra/ resolve as SST bundles them', async () => {
    const esbuild = await import('esbuild');
    const r = await esbuild.build({ entryPoints: [join(ROOT, 'sst.config.ts')], bundle: true, packages: 'external', format: 'esm', platform: 'node', write: false, logLevel: 'silent', metafile: true });
    assert.deepEqual(r.errors, []);
    const inputs = Object.keys(r.metafile.inputs);
    for (const f of ['infra/index.ts', 'infra/realtime.ts', 'infra/events.ts', 'infra/push.ts', 'infra/schedule.ts', 'infra/api.ts', 'infra/grants.ts']) {
      assert.ok(inputs.includes(f), `${f} is part of the program`);
    }
  });
});
