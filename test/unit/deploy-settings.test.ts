// A stage's settings (infra/settings.ts) are what a first deploy needs: each
// has a default that its own rule accepts, or a documented step that sets it,
// and the reserved-concurrency ones read as a deploy reads them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { APP_NAME, LAMBDA_UNRESERVED_MINIMUM, NONE, RESERVED_CONCURRENCY, SETTINGS, reservedExecutions, stageProblem, type Setting } from '../../infra/settings.js';
import { ROOT } from '../helpers/procs.js';

const settings = Object.values(SETTINGS) as Setting[];
const docs = readFileSync(join(ROOT, 'docs/serverless.md'), 'utf8');
const deploying = docs.slice(docs.indexOf('## Deploying'), docs.indexOf('\n## ', docs.indexOf('## Deploying') + 5));

test('every setting without a default is set by a step of the documented deploy, before npx sst deploy', () => {
  const steps = deploying.slice(0, deploying.indexOf('npx sst deploy'));
  const required = settings.filter((s) => s.default === undefined);
  assert.deepEqual(required.map((s) => s.name), ['AdminToken']);
  for (const s of required) assert.match(steps, new RegExp(`npx sst secret set ${s.name} .* --stage prod`), `docs/serverless.md sets ${s.name} before deploying`);
  assert.match(steps, /npx twill aws check --stage prod/, 'the preflight runs before the deploy');
});

test("every setting's default is a value its own rule accepts, and docs/serverless.md names each setting", () => {
  for (const s of settings) {
    if (s.default !== undefined) assert.equal(s.problem?.(s.default), undefined, `${s.name}'s default ${s.default}`);
    assert.ok(docs.includes(`\`${s.name}\``), `docs/serverless.md names ${s.name}`);
  }
});

test('reserved concurrency: none reserves nothing, a count reserves it, anything else is refused naming the setting', () => {
  for (const key of RESERVED_CONCURRENCY) {
    const s = SETTINGS[key];
    assert.equal(s.default, NONE, `${s.name} reserves nothing unless asked`);
    assert.equal(reservedExecutions(s, NONE), 0);
    assert.equal(reservedExecutions(s, '50'), 50);
    for (const bad of ['0', '-1', '1.5', 'lots', '', ' 50', '1e3']) {
      assert.throws(() => reservedExecutions(s, bad), new RegExp(`^Error: ${s.name} must be none \\(no reservation\\) or a whole number`), JSON.stringify(bad));
    }
  }
  assert.equal(LAMBDA_UNRESERVED_MINIMUM, 100);
});

test('an app/stage that cannot be a topic prefix is refused, naming both', () => {
  assert.equal(stageProblem('twill', 'prod'), undefined);
  assert.equal(stageProblem('twill', 'pr-42_b'), undefined);
  for (const stage of ['', 'a/b', 'a+b', 'x'.repeat(65)]) assert.match(stageProblem('twill', stage) ?? '', /cannot be a topic prefix/);
});

test('no function in infra/ reserves concurrency except through its setting', () => {
  const dir = join(ROOT, 'infra');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const text = readFileSync(join(dir, f), 'utf8');
    assert.doesNotMatch(text, /reserved\s*:\s*\d/, `${f} reserves a fixed number of executions`);
    assert.doesNotMatch(text, /reservedConcurrentExecutions\s*:\s*\d/, `${f} reserves a fixed number of executions`);
  }
});

test("the app name twill aws check reads the stage's secrets under is sst.config.ts's", () => {
  // infra/config.ts refuses to deploy when they differ; this says so before a deploy is tried.
  assert.match(readFileSync(join(ROOT, 'sst.config.ts'), 'utf8'), new RegExp(`\\bname: '${APP_NAME}'`));
});
