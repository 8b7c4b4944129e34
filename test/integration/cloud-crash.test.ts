// A controller killed (SIGKILL) after it wrote the lease and while its
// CreateRoute was in flight: the next reconcile finds the lease, keeps the
// subnet, and writes the missing route. The reconcile runs in a child
// process against the EC2 fake; the fake kills it the moment CreateRoute
// arrives and never answers.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseNetConf } from '../../core/config.js';
import { silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { AwsCloud } from '../../control/routes/clouds/aws.js';
import { Controller } from '../../control/controller/controller.js';
import { reconcileNetwork } from '../../control/routes/routes.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { ROOT, removeTempDirs, tempDir } from '../helpers/procs.js';
import { CountingPublisher, FAKE_CREDENTIALS } from '../helpers/clouds.js';

const CHILD = `
  const m = (p) => import(new URL(p, process.env.TWILL_ROOT_URL).href);
  const { SqliteStore } = await m('control/store/sqlite.ts');
  const { Controller } = await m('control/controller/controller.ts');
  const { AwsCloud } = await m('control/routes/clouds/aws.ts');
  const { reconcileNetwork } = await m('control/routes/routes.ts');
  const { Topics } = await m('core/topics.ts');
  const { silentLogger } = await m('core/log.ts');
  const store = new SqliteStore(process.env.TWILL_DB);
  const publisher = { publish: async () => {} };
  const controller = new Controller(store, publisher, { topics: new Topics(), log: silentLogger });
  const cloud = new AwsCloud({ endpoint: process.env.EC2_URL, region: 'us-east-1', credentials: { accessKeyId: 'AKIDFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-tests' } });
  await reconcileNetwork('net', { controller, store, cloud, log: silentLogger });
  process.stdout.write('finished\\n');
`;

after(() => removeTempDirs());

describe('a controller killed between the lease and the route', () => {
  test('is repaired by the next reconcile', async () => {
    const dir = tempDir('twill-crash-');
    const db = join(dir, 'twill.db');
    const ec2 = new FakeEc2();
    const url = await ec2.start();
    try {
      ec2.addTable({ id: 'rtb-1', vpcId: 'vpc-1', main: true });
      ec2.addInstance({ id: 'i-0000000a', network: 'net' });
      const setup = new SqliteStore(db);
      await new Controller(setup, new CountingPublisher(), { topics: new Topics(), log: silentLogger })
        .applyNetwork('net', parseNetConf({ Network: '10.9.0.0/16', Backend: { Type: 'aws-vpc' } }, {}));
      await setup.close();

      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, TWILL_ROOT_URL: pathToFileURL(ROOT + '/').href, TWILL_DB: db, EC2_URL: url, AWS_EC2_METADATA_DISABLED: 'true' },
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      ec2.onAction = (action) => {
        if (action !== 'CreateRoute') return;
        child.kill('SIGKILL');
        return 'drop';
      };
      const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const signal = await new Promise<NodeJS.Signals | null>((r) => child.once('close', (_c, s) => r(s)));
      clearTimeout(guard);
      ec2.onAction = undefined;
      assert.equal(signal, 'SIGKILL', out);
      assert.doesNotMatch(out, /finished/);
      assert.equal(ec2.calls.CreateRoute, 1);
      assert.deepEqual(ec2.routeMap('rtb-1'), {}, 'the route was never written');

      const store = new SqliteStore(db);
      try {
        const lease = await store.getLease('net', 'i-0000000a');
        assert.ok(lease?.subnet, 'the lease was written before the kill');
        const controller = new Controller(store, new CountingPublisher(), { topics: new Topics(), log: silentLogger });
        const cloud = new AwsCloud({ endpoint: url, region: 'us-east-1', credentials: FAKE_CREDENTIALS });
        const r = await reconcileNetwork('net', { controller, store, cloud, log: silentLogger });
        await cloud.close();
        assert.equal(r.created, 1);
        assert.equal(r.joined, 0, 'the lease is kept as it is');
        assert.deepEqual(ec2.routeMap('rtb-1'), { [lease.subnet]: 'eni-0000000a' });
        assert.equal((await store.getLease('net', 'i-0000000a'))?.revision, lease.revision);
      } finally {
        await store.close();
      }
    } finally {
      await ec2.close();
    }
  });
});
