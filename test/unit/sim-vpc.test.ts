// The simulated VPC's model of EC2's source/destination check: what the
// route controller turns off, what the lab's router enforces, and a sim.db
// made before the check was modelled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SimCloud, SimVpc } from '../../control/routes/clouds/sim.js';
import { readNetConf } from '../../core/config.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';

const net = { name: 'net', config: readNetConf(JSON.stringify({ Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc' } })).config, leases: [] };

test('an instance starts with its check on, the cloud asks for it to be prepared, and prepareInstance turns it off', async () => {
  const vpc = new SimVpc(':memory:');
  const cloud = new SimCloud(vpc);
  assert.equal(vpc.start('a', 'net').sourceDestCheck, true);
  const [inst] = (await cloud.snapshot(net)).instances;
  assert.equal(inst?.needsPrepare, true);
  await cloud.prepareInstance(net, inst!);
  assert.equal(vpc.instance('a')?.sourceDestCheck, false);
  assert.equal((await cloud.snapshot(net)).instances[0]?.needsPrepare, false);
  assert.equal(cloud.calls.ModifyInstanceAttribute, 1);
  // stop and start keep it, as EC2 keeps an instance's attributes
  vpc.stop('a');
  assert.equal(vpc.start('a', 'net').sourceDestCheck, false);
  vpc.terminate('a');
  assert.throws(() => vpc.setSourceDestCheck('a', true), /instance a is terminated: its source\/destination check can no longer change/);
  assert.throws(() => vpc.setSourceDestCheck('nope', true), /instance nope does not exist/);
  await cloud.close();
});

test('a sim.db made before the check was modelled opens, its instances with the check on', () => {
  const file = join(tempDir('twill-sim-'), 'sim.db');
  const old = new Database(file);
  old.exec('CREATE TABLE instances (id TEXT PRIMARY KEY, network TEXT NOT NULL, state TEXT NOT NULL, private_ip TEXT NOT NULL, created_at TEXT NOT NULL)');
  old.prepare('INSERT INTO instances VALUES (?, ?, ?, ?, ?)').run('old-1', 'net', 'running', '172.31.0.10', new Date(0).toISOString());
  old.close();
  const vpc = new SimVpc(file);
  try {
    assert.equal(vpc.instance('old-1')?.sourceDestCheck, true);
    assert.equal(vpc.start('new-1', 'net').sourceDestCheck, true);
  } finally {
    vpc.close();
    removeTempDirs();
  }
});
