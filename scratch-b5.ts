import { run, reconcile, type KernelState } from './agent/kernel/index.js';
const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const ns = 'twb5-' + process.pid;
const N = 5000;
const s: KernelState = { devices: [{ name: 'flannel.1', link: { kind: 'vxlan', vni: 1 } }], routes: [], neighbours: [], fdb: [] };
for (let i = 1; i <= N; i++) { const sub = `10.${(i >> 8) + 1}.${i & 255}.0`; const mac = `0e:00:00:00:${hex2(i>>8)}:${hex2(i&255)}`;
 s.routes.push({ dst: `${sub}/24`, via: sub, dev: 'flannel.1', onlink: true }); s.neighbours.push({ dev: 'flannel.1', ip: sub, mac }); s.fdb.push({ dev: 'flannel.1', mac, dst: `172.16.${i >> 8}.${i & 255}` }); }
await run(['ip','netns','add',ns]); await run(['ip','link','set','lo','up'],{netns:ns});
const own = { devices: [{ name: 'flannel.1', kind: 'vxlan' as const }] };
await reconcile(s, own, { netns: ns });
for (let k = 0; k < 10; k++) { const r = await reconcile(s, own, { netns: ns }); if (k > 6) console.log(r.timings); }
await run(['ip','netns','del',ns]);
