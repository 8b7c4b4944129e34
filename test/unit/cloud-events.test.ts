// Instance events: parsing the three clouds' shapes (and refusing malformed
// ones clearly), deciding which networks an event pokes, and the guarantee
// that matters: any order of duplicated, reordered events ends in the same
// state, because each one only triggers the full reconcile.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseNetConf } from '../../core/config.js';
import { createLogger, silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { AwsCloud } from '../../control/routes/clouds/aws.js';
import { Controller } from '../../control/controller/controller.js';
import {
  EventError, handleEvent, networksToReconcile, parseEvent, type InstanceEvent,
} from '../../control/routes/events.js';
import { reconcileNetwork } from '../../control/routes/routes.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { FAKE_CREDENTIALS, CountingPublisher } from '../helpers/clouds.js';
import { EVENT_FIXTURES } from '../helpers/procs.js';

const FIXTURES = EVENT_FIXTURES;
const fixture = (name: string): unknown => JSON.parse(readFileSync(`${FIXTURES}/${name}`, 'utf8'));
const push = (entry: unknown) => ({ message: { data: Buffer.from(JSON.stringify(entry)).toString('base64'), messageId: '1', publishTime: '2026-11-20T10:00:01Z' }, subscription: 'projects/p/subscriptions/twill' });
const ec2Event = (id: string, state: string) => ({
  version: '0', id: `ev-${id}-${state}`, 'detail-type': 'EC2 Instance State-change Notification', source: 'aws.ec2', account: '123456789012',
  time: '2026-11-20T10:00:00Z', region: 'us-east-1', resources: [`arn:aws:ec2:us-east-1:123456789012:instance/${id}`], detail: { 'instance-id': id, state },
});

describe('event parsing', () => {
  test('the sample events of each cloud', () => {
    const ec2 = parseEvent(fixture('ec2-state-change-running.json'));
    assert.deepEqual(ec2, { kind: 'instance', event: { cloud: 'aws', instanceId: 'i-1234567890abcdef0', state: 'running', rawState: 'running', region: 'us-east-1', time: '2021-11-11T21:29:54Z', eventId: '7bf73129-1428-4cd3-a780-95db273d1602' } });
    const gce = parseEvent(push(fixture('gce-audit-instances-delete.json')));
    assert.deepEqual(gce, { kind: 'instance', event: { cloud: 'gce', instanceId: '7001234567890123456', name: 'node-7', zone: 'us-east1-b', project: 'my-project', state: 'terminated', rawState: 'v1.compute.instances.delete', time: '2026-11-20T10:00:00.000Z' } });
    // A bare audit log entry (e.g. from a log sink read some other way) is the same event.
    assert.deepEqual(parseEvent(fixture('gce-audit-instances-delete.json')), gce);
    const ali = parseEvent(fixture('ali-ecs-state-change.json'));
    assert.deepEqual(ali, { kind: 'instance', event: { cloud: 'ali', instanceId: 'i-bp1ecr0000000go2go', state: 'stopping', rawState: 'Stopping', region: 'cn-hangzhou', time: '20181226T220114.058+0800', eventId: '9435EAD6-3CF6-4494-8F7A-3A3B2D1C0E9F' } });
  });

  test('Alibaba EventBridge CloudEvents, and text or bytes as well as values', () => {
    const cloudEvent = {
      specversion: '1.0', id: 'e-1', source: 'acs.ecs', type: 'ecs:Instance:StateChange', subject: 'acs:ecs:cn-shanghai:1690000000000030:instance/i-uf6abc',
      time: '2026-11-20T10:00:00Z', aliyunregionid: 'cn-shanghai', aliyunaccountid: '1690000000000030', datacontenttype: 'application/json;charset=utf-8',
      data: { resourceId: 'i-uf6abc', resourceType: 'ALIYUN::ECS::Instance', state: 'Deleted' },
    };
    const want = { kind: 'instance', event: { cloud: 'ali', instanceId: 'i-uf6abc', state: 'terminated', rawState: 'Deleted', region: 'cn-shanghai', time: '2026-11-20T10:00:00Z', eventId: 'e-1' } };
    assert.deepEqual(parseEvent(cloudEvent), want);
    assert.deepEqual(parseEvent(JSON.stringify(cloudEvent)), want);
    assert.deepEqual(parseEvent(Buffer.from(JSON.stringify(cloudEvent))), want);
    assert.deepEqual(parseEvent({ ...cloudEvent, data: { content: { resourceId: 'i-uf6abc', state: 'Deleted' } } }), want);
  });

  test('GCE: only the entry that ends an operation counts; methods that change nothing are ignored', () => {
    const entry = fixture('gce-audit-instances-delete.json') as { operation: object; protoPayload: object };
    const first = parseEvent(push({ ...entry, operation: { id: 'op-1', first: true } }));
    assert.deepEqual(first, { kind: 'ignored', reason: 'operation op-1 is not finished: waiting for the entry with operation.last' });
    const noOp = parseEvent(push({ ...entry, operation: undefined }));
    assert.equal(noOp.kind, 'instance');
    const insert = parseEvent(push({ ...entry, protoPayload: { ...entry.protoPayload, methodName: 'beta.compute.instances.insert' } }));
    assert.equal(insert.kind === 'instance' && insert.event.state, 'running');
    const labels = parseEvent(push({ ...entry, protoPayload: { ...entry.protoPayload, methodName: 'v1.compute.instances.setLabels' } }));
    assert.equal(labels.kind === 'instance' && labels.event.state, 'changed');
    const other = parseEvent(push({ ...entry, protoPayload: { ...entry.protoPayload, methodName: 'v1.compute.instances.setMetadata' } }));
    assert.deepEqual(other, { kind: 'ignored', reason: 'method v1.compute.instances.setMetadata does not change which instances run' });
  });

  test('malformed events are refused with an error that says what is wrong', () => {
    const refuse = (input: unknown, re: RegExp) => assert.throws(() => parseEvent(input), (e: Error) => e instanceof EventError && re.test(e.message), `expected ${re}`);
    refuse('{"source": "aws.ec2",', /^event is not JSON/);
    refuse('[1,2]', /^event is an array: expected an EC2 Instance State-change Notification/);
    refuse({ hello: 'world' }, /^event not recognised: expected an EC2 Instance State-change Notification \(source aws\.ec2\), a Pub\/Sub push/);
    refuse({ ...ec2Event('i-0123456789abcdef0', 'running'), detail: { 'instance-id': 'bogus', state: 'running' } }, /^EC2 state-change event: detail\.instance-id: expected an instance id such as i-1234567890abcdef0$/);
    refuse({ ...ec2Event('i-0123456789abcdef0', 'exploded') }, /^EC2 state-change event: detail\.state: /);
    refuse({ ...ec2Event('i-0123456789abcdef0', 'running'), detail: undefined }, /^EC2 state-change event: detail: /);
    refuse({ ...ec2Event('i-0123456789abcdef0', 'running'), 'detail-type': 'EC2 Spot Instance Interruption Warning' }, /detail-type: expected "EC2 Instance State-change Notification"/);
    refuse({ message: { data: '!!!not base64!!!' } }, /^Pub\/Sub push message: message\.data is not base64$/);
    refuse({ message: { data: Buffer.from('not json').toString('base64') } }, /^Pub\/Sub push message: message\.data is not base64 JSON/);
    refuse({ message: {} }, /^Pub\/Sub push message: message\.data: /);
    refuse(push({ protoPayload: { methodName: 'v1.compute.instances.delete', resourceName: 'instances/x' } }), /^GCE audit log entry: protoPayload\.resourceName: expected projects\/PROJECT\/zones\/ZONE\/instances\/NAME$/);
    refuse({ ...(fixture('ali-ecs-state-change.json') as object), content: { resourceId: 'i-abc', state: 'Exploded' } }, /^Alibaba CloudMonitor ECS event: content\.state: expected one of Pending, Starting, Running/);
    refuse({ specversion: '1.0', type: 'ecs:Instance:StateChange', data: {} }, /data\.resourceId and data\.state are required/);
    refuse('x'.repeat(300 * 1024), /at most 262144 are accepted/);
  });
});

describe('which networks an event pokes', () => {
  const conf = (type: string) => parseNetConf({ Network: '10.0.0.0/16', Backend: { Type: type, ...(type === 'ali-vpc' ? { AccessKeyID: 'a', AccessKeySecret: 'b' } : {}) } }, {});
  const networks = [
    { name: 'a1', config: conf('aws-vpc') },
    { name: 'a2', config: conf('aws-vpc') },
    { name: 'g1', config: conf('gce') },
    { name: 'v1', config: conf('vxlan') },
  ];
  const ev: InstanceEvent = { cloud: 'aws', instanceId: 'i-1', state: 'running', rawState: 'running' };

  test('the tagged network, plus networks where the instance still holds a lease', async () => {
    assert.deepEqual(await networksToReconcile(ev, { networks, instanceNetworks: async () => ['a2'] }), ['a2']);
    assert.deepEqual(await networksToReconcile(ev, { networks, instanceNetworks: async () => [], leasedIn: async () => ['a1'] }), ['a1']);
    assert.deepEqual(await networksToReconcile(ev, { networks, instanceNetworks: async () => ['g1'] }), [], 'a tag naming another cloud network does not count');
  });

  test('an instance whose tags cannot be read any more: every network of that cloud', async () => {
    assert.deepEqual(await networksToReconcile({ ...ev, state: 'terminated' }, { networks, instanceNetworks: async () => undefined }), ['a1', 'a2']);
    assert.deepEqual(await networksToReconcile({ ...ev, cloud: 'gce' }, { networks }), ['g1']);
    assert.deepEqual(await networksToReconcile({ ...ev, cloud: 'ali' }, { networks }), []);
  });
});

describe('duplicated and reordered events (EC2 fake, real SDK)', () => {
  let ec2: FakeEc2;
  let cloud: AwsCloud;
  before(async () => {
    ec2 = new FakeEc2();
    const url = await ec2.start();
    cloud = new AwsCloud({ endpoint: url, region: 'us-east-1', credentials: FAKE_CREDENTIALS });
  });
  after(async () => {
    await cloud.close();
    await ec2.close();
  });

  function permutations<T>(xs: T[]): T[][] {
    if (xs.length <= 1) return [xs];
    return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
  }

  // What happened, in order: A launches, A runs, B runs, A is terminated and
  // disappears. Each change emits one event; B's is delivered twice. Every
  // order of delivery is tried; an event is delivered only after the change
  // it reports (the cloud moves on meanwhile), and each delivery runs the
  // handler as a serverless function would.
  const timeline: { event: unknown; change: () => void }[] = [
    { event: ec2Event('i-0000000a', 'pending'), change: () => ec2.addInstance({ id: 'i-0000000a', network: 'net', state: 'pending', privateIp: '172.31.0.10' }) },
    { event: ec2Event('i-0000000a', 'running'), change: () => { ec2.instances.get('i-0000000a')!.state = 'running'; } },
    { event: ec2Event('i-0000000b', 'running'), change: () => ec2.addInstance({ id: 'i-0000000b', network: 'net', privateIp: '172.31.0.11' }) },
    { event: ec2Event('i-0000000a', 'terminated'), change: () => { ec2.instances.delete('i-0000000a'); } },
  ];
  const deliveries = [0, 1, 2, 2, 3];

  test('every order of the same events ends in the same state', async () => {
    const orders = permutations(deliveries.map((d, i) => [d, i] as const));
    const seen = new Set<string>();
    let runs = 0;
    for (const order of orders) {
      const key = order.map(([d]) => d).join('');
      if (seen.has(key)) continue; // the duplicate makes some orders identical
      seen.add(key);
      runs++;
      ec2.instances.clear();
      ec2.tables.clear();
      ec2.addTable({ id: 'rtb-1', vpcId: 'vpc-1', main: true });
      const store = new SqliteStore(':memory:');
      const controller = new Controller(store, new CountingPublisher(), { topics: new Topics(), log: silentLogger });
      await controller.applyNetwork('net', parseNetConf({ Network: '10.9.0.0/16', Backend: { Type: 'aws-vpc' } }, {}));
      await controller.applyNetwork('other', parseNetConf({ Network: '10.8.0.0/16', Backend: { Type: 'aws-vpc' } }, {}));
      const deps = { controller, store, cloud, log: silentLogger };
      let applied = -1;
      for (const [d] of order) {
        while (applied < d) timeline[++applied]!.change();
        await handleEvent(timeline[d]!.event, { store, cloud, reconcile: (n) => reconcileNetwork(n, deps), log: silentLogger });
      }
      const leases = (await store.listLeases('net')).map((l) => [l.node, l.publicIP]);
      assert.deepEqual(leases, [['i-0000000b', '172.31.0.11']], `order ${key}`);
      const b = await store.getLease('net', 'i-0000000b');
      assert.deepEqual(ec2.routeMap('rtb-1'), { [b!.subnet!]: 'eni-0000000b' }, `order ${key}`);
      assert.deepEqual(await store.listLeases('other'), [], `order ${key}`);
      assert.deepEqual((await store.listRouteStatus('net')).map((s) => [s.node, s.state]), [['i-0000000b', 'ok']], `order ${key}`);
      await store.close();
    }
    assert.equal(runs, 60, 'all 5!/2! distinct orders');
  });

  test('a malformed event changes nothing', async () => {
    const store = new SqliteStore(':memory:');
    const controller = new Controller(store, new CountingPublisher(), { topics: new Topics(), log: silentLogger });
    await controller.applyNetwork('net', parseNetConf({ Network: '10.9.0.0/16', Backend: { Type: 'aws-vpc' } }, {}));
    ec2.instances.clear();
    ec2.addInstance({ id: 'i-0000000c', network: 'net' });
    const before = { ...ec2.calls };
    let reconciled = 0;
    await assert.rejects(
      handleEvent('{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","region":"us-east-1","detail":{}}', {
        store, cloud, reconcile: async () => { reconciled++; throw new Error('must not run'); }, log: createLogger('t', 'error'),
      }),
      /EC2 state-change event: detail\.instance-id: .*detail\.state: /,
    );
    assert.equal(reconciled, 0);
    assert.deepEqual(ec2.calls, before);
    assert.deepEqual(await store.listLeases('net'), []);
    await store.close();
  });
});
