// `twill controller --cloud aws|gce|ali` as a process against each fake
// endpoint, configured the way an operator configures each SDK: AWS through
// its own environment (AWS_ENDPOINT_URL, AWS_REGION, keys), GCE and Ali with
// --cloud-endpoint and their usual variables. Nothing here can reach a real
// cloud: every endpoint is on 127.0.0.1 and every credential is fake.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeNetConf } from '../helpers/cluster.js';
import { freePort, removeTempDirs, tempDir, waitFor } from '../helpers/procs.js';
import { FakeAli } from '../fakes/ali.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { FakeGce } from '../fakes/gce.js';
import { FAKE_CREDENTIALS, startCloudController } from '../helpers/clouds.js';

after(() => removeTempDirs());

/** Whatever the test runner's environment holds about real clouds is dropped. */
const CLEAN: NodeJS.ProcessEnv = Object.fromEntries(
  Object.keys(process.env).filter((k) => /^(AWS_|GOOGLE_|GCLOUD_|CLOUDSDK_|ALIBABA_|ALICLOUD_|ACCESS_KEY_)/.test(k)).map((k) => [k, undefined]),
);

describe('twill controller --cloud against the fake endpoints', () => {
  test('aws: the SDK finds the endpoint, region and keys in its own environment', async () => {
    const ec2 = new FakeEc2();
    const url = await ec2.start();
    const dir = tempDir('twill-ctl-aws-');
    ec2.addTable({ id: 'rtb-1', vpcId: 'vpc-1', main: true });
    ec2.addInstance({ id: 'i-0000000a', network: 'net' });
    const conf = await writeNetConf(dir, 'net', { Network: '10.70.0.0/16', Backend: { Type: 'aws-vpc' } });
    const ctl = await startCloudController({
      dataDir: join(dir, 'data'), networks: { net: conf }, extra: ['--cloud', 'aws', '--reconcile-interval', '200ms'],
      env: {
        ...CLEAN, AWS_ENDPOINT_URL: url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: FAKE_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: FAKE_CREDENTIALS.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
      },
    });
    try {
      await waitFor('route in rtb-1', () => Object.values(ec2.routeMap('rtb-1')).includes('eni-0000000a'));
    } finally {
      await ctl.kill();
      await ec2.close();
    }
  });

  test('gce: --cloud-endpoint, --cloud-project and a ready access token', async () => {
    const gce = new FakeGce('p1');
    const url = await gce.start();
    const dir = tempDir('twill-ctl-gce-');
    gce.addInstance({ name: 'a', twill: 'net' });
    const conf = await writeNetConf(dir, 'net', { Network: '10.71.0.0/16', Backend: { Type: 'gce' } });
    const metricsPort = await freePort();
    const ctl = await startCloudController({
      dataDir: join(dir, 'data'), networks: { net: conf },
      extra: ['--cloud', 'gce', '--cloud-endpoint', url, '--cloud-project', 'p1', '--reconcile-interval', '200ms', '--metrics-addr', `127.0.0.1:${metricsPort}`],
      env: { ...CLEAN, GOOGLE_OAUTH_ACCESS_TOKEN: 'local-token' },
    });
    try {
      await waitFor('route inserted', () => Object.values(gce.routeMap()).includes('a'));
      assert.deepEqual([...gce.authHeaders], ['Bearer local-token']);
      await waitFor('metrics', async () => /twill_routes\{network="net"\} 1/.test(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()));
    } finally {
      await ctl.kill();
      await gce.close();
    }
  });

  test('ali: --cloud-endpoint, --cloud-region and keys from ACCESS_KEY_ID / ACCESS_KEY_SECRET', async () => {
    const ali = new FakeAli();
    const url = await ali.start();
    const dir = tempDir('twill-ctl-ali-');
    ali.addTable({ id: 'vtb-1', vpcId: 'vpc-1', type: 'System' });
    ali.addInstance({ id: 'i-a', network: 'net' });
    const conf = await writeNetConf(dir, 'net', { Network: '10.72.0.0/16', Backend: { Type: 'ali-vpc' } });
    const ctl = await startCloudController({
      dataDir: join(dir, 'data'), networks: { net: conf },
      extra: ['--cloud', 'ali', '--cloud-endpoint', url, '--cloud-region', 'cn-hangzhou', '--reconcile-interval', '200ms'],
      env: { ...CLEAN, ACCESS_KEY_ID: FAKE_CREDENTIALS.accessKeyId, ACCESS_KEY_SECRET: FAKE_CREDENTIALS.secretAccessKey },
    });
    try {
      await waitFor('entry created', () => Object.values(ali.routeMap('vtb-1')).includes('i-a'));
      assert.doesNotMatch(ctl.output(), new RegExp(FAKE_CREDENTIALS.secretAccessKey), 'the secret never reaches the logs');
    } finally {
      await ctl.kill();
      await ali.close();
    }
  });
});
