// The package a host installs: `npm pack` of this checkout, installed into an
// empty directory without the repository (as a host without the sources
// would), runs `twill agent --help` and says its version; the systemd units
// in examples/systemd verify against the installed command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeTempDirs, tempDir } from '../helpers/procs.js';

const ROOT = join(import.meta.dirname, '../..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

test('npm pack gives a package that installs the twill command on a host without the repository', { timeout: 10 * 60_000 }, () => {
  const dir = tempDir('twill-pack-');
  try {
    const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    npm(['pack', '--pack-destination', dir], ROOT);
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.equal(tarball, `twill-${VERSION}.tgz`);
    // What is in it: the built JavaScript and the command, no sources, tests or benchmarks.
    const listing = execFileSync('tar', ['-tzf', join(dir, tarball as string)], { encoding: 'utf8' }).split('\n');
    assert.ok(listing.includes('package/bin/twill.js') && listing.includes('package/dist/cli/main.js'), 'the command and the build');
    assert.ok(!listing.some((f) => /^package\/(test|bench|dist\/test|dist\/bench)\/|\.ts$/.test(f) && !f.endsWith('.d.ts')), `no sources or tests: ${listing.filter((f) => f.endsWith('.ts')).slice(0, 3)}`);

    const host = join(dir, 'host');
    execFileSync('mkdir', ['-p', host]);
    writeFileSync(join(host, 'package.json'), '{"name":"host","private":true}\n');
    npm(['install', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', join(dir, tarball as string)], host);
    const twill = join(host, 'node_modules/.bin/twill');
    const run = (args: string[]) => spawnSync(twill, args, { cwd: host, encoding: 'utf8', env: { ...process.env, TWILL_FROM_SOURCE: '' } });
    const help = run(['agent', '--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: twill agent --config FILE \[flags\]/);
    // twill aws check loads from the package alone: the SDK clients it reads the account with, and infra/settings.ts's rules (dist/infra/settings.js).
    const aws = run(['aws', 'check', '--help']);
    assert.equal(aws.status, 0, aws.stderr);
    assert.match(aws.stdout, /^usage: twill aws check --stage STAGE/);
    // twill version, -v and --version, and the agent's --version (flanneld's; its -v is klog's verbosity) agree with package.json
    for (const args of [['version'], ['-v'], ['--version'], ['agent', '--version']]) assert.equal(run(args).stdout, `twill ${VERSION}\n`, args.join(' '));

    // The installed controller finds the dashboard's page (dist/control/http/ reads ../../../dashboard/).
    assert.ok(listing.includes('package/dashboard/index.html') && listing.includes('package/dashboard/app.js'), 'the dashboard');
    const page = spawnSync(process.execPath, ['--input-type=module', '-e',
      "const { dashboardAsset } = await import('twill/dist/control/http/dashboard.js'); const r = dashboardAsset('/dashboard/app.js'); console.log(r.status, r.body.length > 1000);"], { cwd: host, encoding: 'utf8' });
    assert.equal(page.stdout.trim(), '200 true', page.stderr);

    // The units, pointed at the installed command, are what systemd accepts.
    for (const unit of ['twill-agent.service', 'twill-controller.service']) {
      const file = join(dir, unit);
      copyFileSync(join(ROOT, 'examples/systemd', unit), file);
      writeFileSync(file, readFileSync(file, 'utf8').replaceAll('/usr/bin/twill', twill));
      const v = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8' });
      assert.equal(v.status, 0, `${unit}: ${v.stderr}`);
      assert.equal(v.stderr.trim(), '', `${unit}: ${v.stderr}`);
    }
  } finally {
    removeTempDirs();
  }
});
