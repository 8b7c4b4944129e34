import { run, normalizeState, planReconcile, runJson, parseRoutes, parseNeighbours, parseFdb, parseLinks, reconcile, type KernelState } from './agent/kernel/index.js';
const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const ns = 'twb3-' + process.pid;
const N = 5000;
const s: KernelState = { devices: [{ name: 'flannel.1', link: { kind: 'vxlan', vni: 1 } }], routes: [], neighbours: [], fdb: [] };
for (let i = 1; i <= N; i++) { const sub = `10.${(i >> 8) + 1}.${i & 255}.0`; const mac = `0e:00:00:00:${hex2(i>>8)}:${hex2(i&255)}`;
 s.routes.push({ dst: `${sub}/24`, via: sub, dev: 'flannel.1', onlink: true }); s.neighbours.push({ dev: 'flannel.1', ip: sub, mac }); s.fdb.push({ dev: 'flannel.1', mac, dst: `172.16.${i >> 8}.${i & 255}` }); }
await run(['ip','netns','add',ns]); await run(['ip','link','set','lo','up'],{netns:ns});
const t0 = performance.now();
const r = await reconcile(s, { devices: [{ name: 'flannel.1', kind: 'vxlan' }] }, { netns: ns });
console.log('from empty', (performance.now()-t0).toFixed(1), r.timings, r.batches.map(b => [b.tool, b.durationMs.toFixed(1)]));
for (let k = 0; k < 3; k++) {
  let t = performance.now(); const n = normalizeState(s); const tn = performance.now() - t;
  t = performance.now(); const j = await Promise.all([runJson(['ip','-j','-d','addr','show'],{netns:ns}), runJson(['ip','-N','-j','route','show','table','all'],{netns:ns}), runJson(['ip','-j','neigh','show'],{netns:ns}), runJson(['bridge','-j','fdb','show'],{netns:ns})]); const tr = performance.now() - t;
  t = performance.now(); const a = { links: parseLinks(j[0]), routes: parseRoutes(j[1]), neighbours: parseNeighbours(j[2]), fdb: parseFdb(j[3]) }; const tp = performance.now() - t;
  t = performance.now(); planReconcile(n, a, { devices: [{ name: 'flannel.1', kind: 'vxlan' }] }); const tpl = performance.now() - t;
  console.log(`normalize ${tn.toFixed(1)} spawn+JSON ${tr.toFixed(1)} parse ${tp.toFixed(1)} plan ${tpl.toFixed(1)}`);
}
await run(['ip','netns','del',ns]);
