// A flannel user's first hour with twill, with twill as built: their files and
// flags as they have them. A host moving from flannel keeps its pod subnet
// (the FLANNEL_SUBNET of the subnet.env already there); flanneld's flags in
// Go's syntax and its FLANNELD_* variables drive the agent; --healthz-port
// serves /healthz and /readyz as flanneld's does; kube-flannel.yml's own
// arguments get a sentence, not a stack trace; `config check` warns about
// what flannel ignores and still passes the file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSubnetEnv } from '../../agent/subnet-env.js';
import { addNode, startController, writeNetConf, type ControllerProc } from '../helpers/cluster.js';
import { freePort, removeTempDirs, runTwill, startProc, tempDir, waitFor, type Proc } from '../helpers/procs.js';

const NET = 'flannel';

describe('moving from flannel', () => {
  let dir: string;
  let ctl: ControllerProc;
  const agents: Proc[] = [];

  before(async () => {
    dir = tempDir('twill-flannel-');
    const net = await writeNetConf(dir, NET, { Network: '10.96.0.0/16', Backend: { Type: 'alloc' } });
    ctl = await startController({ dataDir: join(dir, 'data'), networks: { [NET]: net } });
  });
  after(async () => {
    for (const a of agents) await a.kill();
    await ctl?.kill();
    removeTempDirs();
  });

  test("an agent on a host whose subnet.env flannel wrote keeps that subnet, driven by flanneld's flags and FLANNELD_* variables", async () => {
    const creds = await addNode(ctl.dataDir, 'old-flannel-host', NET, ctl.url);
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify(creds));
    const subnetFile = join(dir, 'run', 'subnet.env');
    mkdirSync(join(dir, 'run'));
    // what flanneld left behind
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.96.0.0/16\nFLANNEL_SUBNET=10.96.77.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    const healthz = await freePort();
    const agent = startProc(
      ['agent', `-config=${config}`, '-state-dir', join(dir, 'state'), '--metrics-addr=', `--healthz-ip=127.0.0.1`, '-public-ip=127.0.0.9', '--ip-masq=true'],
      { env: { FLANNELD_IFACE: 'lo', FLANNELD_SUBNET_FILE: subnetFile, FLANNELD_HEALTHZ_PORT: String(healthz), FLANNELD_IP_MASQ: 'false' } },
    );
    agents.push(agent);
    const ready = () => fetch(`http://127.0.0.1:${healthz}/readyz`).then((r) => r.status === 200, () => false);
    await waitFor('the agent ready on --healthz-port', ready, 30_000, 100).catch((e: Error) => {
      throw new Error(`${e.message}\n${agent.output()}`);
    });
    assert.equal(await (await fetch(`http://127.0.0.1:${healthz}/healthz`)).text(), 'ok\n');
    assert.equal((await fetch(`http://127.0.0.1:${healthz}/metrics`)).status, 404, 'flanneld\'s healthz port serves health only');
    const env = readSubnetEnv(subnetFile);
    assert.equal(env.FLANNEL_SUBNET, '10.96.77.1/24', agent.output());
    // the flag beat its variable
    assert.equal(env.FLANNEL_IPMASQ, 'true');
    assert.match(agent.output(), /asking for the subnet the existing subnet\.env names .*subnet=10\.96\.77\.0\/24/);
  });

  test("kube-flannel.yml's container arguments get one sentence saying what twill does instead", async () => {
    const r = await runTwill(['agent', '--ip-masq', '--kube-subnet-mgr']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, "twill agent: --kube-subnet-mgr is flanneld's and means nothing to twill: twill does not use the Kubernetes API to lease subnets: the twill controller leases them; run the agent with the node config `twill node add` printed (--config FILE)\n");
  });

  test("config check passes flannel's files with a warning for each field flannel would ignore", async () => {
    const file = join(dir, 'net-conf.json');
    writeFileSync(file, JSON.stringify({ Netwrok: 'x', Network: '10.244.0.0/16', Backend: { Type: 'VXLAN', MTU: 1400, MacPrefix: '0E-2A' } }));
    const r = await runTwill(['config', 'check', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, [
      `${file}: warning: Netwrok: unknown field, ignored as flannel does; did you mean Network?`,
      `${file}: warning: Backend.MacPrefix: a Windows-only vxlan option, ignored on Linux as flannel does`,
      '',
    ].join('\n'));
    const effective = JSON.parse(r.stdout) as { Backend: { Type: string; MTU: number } };
    assert.deepEqual([effective.Backend.Type, effective.Backend.MTU], ['vxlan', 1400]);
  });
});
