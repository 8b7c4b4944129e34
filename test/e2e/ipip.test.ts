// ipip end to end. This machine's kernel has no ipip module, so the host side
// of this file boots user-mode-linux once and runs the file again inside it,
// where the scenario runs as it does for vxlan: hosts as namespaces, real
// CNI pods, pings both ways, drift, kill -9, removal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { insideUml, umlSuite } from '../helpers/uml.js';
import { writeFileSync } from 'node:fs';
import { runTwill, TWILL } from '../helpers/procs.js';
import { overlayScenario, peerState } from './scenario.js';

if (!insideUml()) {
  umlSuite({ name: 'ipip', file: import.meta.filename, modules: ['ipip'] });
} else {
  // Two underlays joined by a router, with DirectRouting: h1 and h2 share L2
  // and route to each other directly, h3 is a hop away and goes through
  // flannel.ipip. Every kind of peer entry is exercised by one cluster.
  const sameL2 = (a: string, b: string) => (a === 'h3') === (b === 'h3');
  overlayScenario({
    name: 'ipip with DirectRouting',
    conf: { Network: '10.248.0.0/16', Backend: { Type: 'ipip', DirectRouting: true } },
    underlays: ['192.168.130.0/24', '192.168.131.0/24'],
    hosts: { h1: 0, h2: 0, h3: 1 },
    device: 'flannel.ipip',
    entries: async () => ({ route: true }),
    extra: (get) => {
      test('flannel.ipip is one-to-many from the public IP, MTU 20 below the underlay; peers are routed onlink through it, on-link ones directly', async () => {
        const c = get();
        const link = JSON.parse(await c.ip('h1', ['-j', '-d', 'link', 'show', 'flannel.ipip'])) as { mtu: number; linkinfo: { info_kind: string; info_data: { local: string; remote: string } } }[];
        assert.equal(link[0]?.linkinfo.info_kind, 'ipip');
        assert.equal(link[0]?.linkinfo.info_data.local, c.node('h1').host.ip);
        assert.equal(link[0]?.linkinfo.info_data.remote, 'any');
        assert.equal(link[0]?.mtu, 1480);
        assert.match(c.subnetEnv('h1') ?? '', /FLANNEL_MTU=1480/);
        const subnet = (await c.subnetOf('h1')) as string;
        assert.match(await c.ip('h1', ['-4', 'addr', 'show', 'dev', 'flannel.ipip']), new RegExp(`inet ${subnet.split('/')[0]}/32`));
        const tunneled = await peerState(c, 'h1', 'h3');
        assert.deepEqual([tunneled.routes[0]?.gateway, tunneled.routes[0]?.dev], [tunneled.publicIP, 'flannel.ipip']);
        assert.match(await c.ip('h1', ['route', 'show', tunneled.subnet]), /onlink/);
        const direct = await peerState(c, 'h1', 'h2');
        assert.deepEqual([direct.routes[0]?.gateway, direct.routes[0]?.dev], [direct.publicIP, 'eth0']);
        // the kernel's fallback device is there too, and down
        assert.match(await c.ip('h1', ['link', 'show', 'tunl0']), /tunl0@NONE: <NOARP> /);
      });

      test('an agent refuses a non-ipip device named flannel.ipip, saying why, and leaves it alone', async () => {
        const c = get();
        const h = await c.lab.addHost('x1', { underlay: 0 });
        await c.lab.exec(h, ['ip', 'link', 'add', 'flannel.ipip', 'type', 'dummy']);
        const r = await runTwill(['node', 'add', 'x1', '--network', c.network, '--data-dir', c.dataDir, '--broker', c.url]);
        assert.equal(r.code, 0, r.stderr);
        writeFileSync(`${c.lab.dir}/x1.agent.json`, r.stdout);
        const p = c.lab.spawn(h, [process.execPath, TWILL, 'agent', '--config', `${c.lab.dir}/x1.agent.json`, '--iface', 'eth0',
          '--subnet-file', `${c.lab.dir}/x1.subnet.env`, '--state-dir', `${c.lab.dir}/x1.state`, '--metrics-addr', '127.0.0.1:9465']);
        assert.equal(await p.exited, 1);
        assert.match(p.output(), /a dummy device named flannel\.ipip exists and is not an ipip tunnel/);
        assert.match((await c.lab.exec(h, ['ip', '-d', 'link', 'show', 'flannel.ipip'])).stdout, /dummy/);
      });
    },
  });
}
