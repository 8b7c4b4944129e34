// Which cloud carries which backend, said once in each backend's spec
// (core/backends/, spec.cloud.kind) and derived everywhere else: the names
// --cloud takes, the networks a route controller serves, and the networks an
// instance event of each cloud concerns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BACKEND_SPECS, BACKEND_TYPES, CLOUD_NAMES } from '../../core/backends/index.js';
import { BACKEND_OF_CLOUD, CLOUD_BACKEND_TYPES, CLOUD_KINDS, CLOUD_OF_BACKEND, backendTypesOf, cloudServing, isCloudBackend } from '../../control/routes/clouds/cloud.js';
import { parseCloudKind } from '../../control/routes/clouds/index.js';
import { EVENT_BACKEND } from '../../control/routes/events.js';

test('each cloud carries one backend type, as its spec says, and each cloud backend type one cloud', () => {
  assert.deepEqual(CLOUD_OF_BACKEND, { 'aws-vpc': 'aws', gce: 'gce', 'ali-vpc': 'ali' });
  assert.deepEqual(BACKEND_OF_CLOUD, { aws: 'aws-vpc', gce: 'gce', ali: 'ali-vpc' });
  for (const name of CLOUD_NAMES) assert.equal(CLOUD_OF_BACKEND[BACKEND_OF_CLOUD[name]], name);
  assert.deepEqual([...CLOUD_BACKEND_TYPES].sort(), BACKEND_TYPES.filter((t) => BACKEND_SPECS[t].cloud).sort());
  assert.ok(BACKEND_TYPES.every((t) => isCloudBackend(t) === (BACKEND_SPECS[t].cloud !== undefined)));
});

test("a route controller serves its cloud's networks; the simulated one stands in for every cloud", () => {
  assert.deepEqual(backendTypesOf('aws'), ['aws-vpc']);
  assert.deepEqual(backendTypesOf('gce'), ['gce']);
  assert.deepEqual(backendTypesOf('ali'), ['ali-vpc']);
  assert.deepEqual([...backendTypesOf('sim')].sort(), ['ali-vpc', 'aws-vpc', 'gce']);
});

test('the cloud that serves a network is the hosted one that carries its backend: the daemon hosts one, the functions every real cloud', () => {
  // the local daemon on one cloud, or on the simulated one
  assert.equal(cloudServing('gce', ['gce']), 'gce');
  assert.equal(cloudServing('aws-vpc', ['gce']), undefined);
  assert.equal(cloudServing('ali-vpc', ['sim']), 'sim');
  assert.equal(cloudServing('vxlan', ['sim']), undefined);
  // the functions
  for (const t of CLOUD_BACKEND_TYPES) assert.equal(cloudServing(t, CLOUD_NAMES), CLOUD_OF_BACKEND[t]);
  assert.equal(cloudServing('host-gw', CLOUD_NAMES), undefined);
});

test('an instance event of each cloud concerns the networks of that cloud\'s backend type', () => {
  assert.deepEqual(EVENT_BACKEND, { aws: 'aws-vpc', gce: 'gce', ali: 'ali-vpc' });
});

test('--cloud takes each cloud name and sim, and names them when given another', () => {
  assert.deepEqual([...CLOUD_KINDS], ['aws', 'gce', 'ali', 'sim']);
  for (const k of CLOUD_KINDS) assert.equal(parseCloudKind(k), k);
  assert.throws(() => parseCloudKind('azure'), /--cloud "azure" is not known: use one of aws, gce, ali, sim/);
});
