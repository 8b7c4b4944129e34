// What an operator sees of a cloud network with an overlay: `twill status`
// and the dashboard's data say per node how it is reached (route, or overlay
// and why), and per route table its use, its limit and where the limit came
// from. A real store and the simulated cloud, reconciled as the controller does.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseNetConf, type NetConf } from '../../core/config.js';
import { silentLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { renderStatus } from '../../cli/status.js';
import { Controller } from '../../control/controller/controller.js';
import { statusReport } from '../../control/http/admin.js';
import { dashboardView } from '../../control/http/dashboard.js';
import { SimCloud, SimVpc } from '../../control/routes/clouds/sim.js';
import { reconcileSettled } from '../../control/routes/poke.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';

after(() => removeTempDirs());

test('status and the dashboard show how each node is reached and each route table against its limit, with where the limit came from', async () => {
  const dir = tempDir('twill-overlay-status-');
  const store = new SqliteStore(join(dir, 'twill.db'));
  const vpc = new SimVpc(join(dir, 'sim.db'));
  try {
    const controller = new Controller(store, { publish: async () => {} }, { topics: new Topics(), log: silentLogger, leaseTtlMs: 3_600_000 });
    const c = parseNetConf({ Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: 2 } }, {});
    await controller.applyNetwork('net', { ...c, Backend: { ...c.Backend, Overlay: { Type: 'vxlan' } } } as NetConf);
    for (const id of ['i1', 'i2', 'i3']) vpc.start(id, 'net');
    await controller.join('net', 'rack1', { publicIP: '192.0.2.10' });
    const metrics = new Metrics();
    const deps = { controller, store, cloud: new SimCloud(vpc), log: silentLogger, metrics };
    await reconcileSettled('net', deps);

    const report = await statusReport(store);
    const reach = Object.fromEntries(report.leases.map((l) => [l.node, l.reach]));
    assert.deepEqual(reach, {
      i1: { via: 'route' }, i2: { via: 'route' }, i3: { via: 'overlay', why: 'route table full' }, rack1: { via: 'overlay', why: 'outside the cloud' },
    });
    assert.deepEqual(report.routeTables.map(({ updatedAt: _, ...t }) => t), [{ network: 'net', what: 'route table', used: 2, limit: 2, source: 'RouteLimit' }]);

    const text = renderStatus(report);
    assert.match(text, /^net\s+i1\s.*\sroute$/m);
    assert.match(text, /^net\s+i3\s.*\soverlay \(route table full \(2 of 2, Backend\.RouteLimit\)\)$/m);
    assert.match(text, /^net\s+rack1\s.*\soverlay \(outside the cloud\)$/m);
    assert.match(text, /ROUTE TABLES\nNETWORK\s+TABLE\s+USED\s+LIMIT\s+LIMIT FROM\nnet\s+route table\s+2\s+2\s+Backend\.RouteLimit\n/);
    assert.match(text, /4 lease\(s\), 0 agent\(s\) online, 2 node\(s\) over the overlay\n$/);
    assert.doesNotMatch(text, /pending/);

    const view = await dashboardView(store);
    const net = view.networks.find((n) => n.name === 'net');
    assert.deepEqual(net?.cloud && { ...net.cloud, updatedAt: null }, {
      routeLimit: 2, limitSource: 'Backend.RouteLimit', updatedAt: null, overlay: { route: 2, overlay: 2 },
      tables: [{ what: 'route table', used: 2, limit: 2, source: 'RouteLimit' }],
    });
    assert.deepEqual(view.nodes.map((x) => [x.name, x.reach?.via, x.route?.reason]), [
      ['i1', 'route', ''], ['i2', 'route', ''], ['i3', 'overlay', 'overlay (route table full (2 of 2, Backend.RouteLimit))'], ['rack1', 'overlay', 'overlay (outside the cloud)'],
    ]);
    assert.match(metrics.render(), /twill_members\{network="net",via="overlay",why="table_full"\} 1/);

    // The overlay taken out of the config: what the leases still say of it is shown nowhere, and the gauge goes.
    await controller.applyNetwork('net', c);
    await reconcileSettled('net', deps);
    const plain = await statusReport(store);
    assert.deepEqual(plain.leases.map((l) => [l.node, l.reach, l.route?.state]), [['i1', undefined, 'ok'], ['i2', undefined, 'ok'], ['i3', undefined, 'pending']]);
    assert.match(renderStatus(plain), /^net\s+i3\s.*\sroute pending: route table full \(2 of 2, Backend\.RouteLimit\)$/m);
    assert.deepEqual((await dashboardView(store)).nodes.map((x) => x.reach), [null, null, null]);
    assert.equal(((await dashboardView(store)).networks[0]?.cloud?.overlay), undefined);
    assert.doesNotMatch(metrics.render(), /twill_members\{/);
  } finally {
    vpc.close();
    await store.close();
  }
});
