import { reconcile, run, applyBatch, type KernelState } from './agent/kernel/index.js';
const N = Number(process.argv[2] ?? 5000);
const hex2 = (n: number) => n.toString(16).padStart(2, '0');
function state(n: number): KernelState {
  const s: KernelState = { devices: [{ name: 'flannel.1', link: { kind: 'vxlan', vni: 1 }, mtu: 1450, mac: '0e:aa:00:00:00:01', addresses: ['10.0.0.0/32'] }], routes: [], neighbours: [], fdb: [] };
  for (let i = 1; i <= n; i++) {
    const sub = `10.${(i >> 8) + 1}.${i & 255}.0`;
    const mac = `0e:00:00:00:${hex2(i >> 8)}:${hex2(i & 255)}`;
    s.routes.push({ dst: `${sub}/24`, via: sub, dev: 'flannel.1', onlink: true });
    s.neighbours.push({ dev: 'flannel.1', ip: sub, mac });
    s.fdb.push({ dev: 'flannel.1', mac, dst: `172.16.${i >> 8}.${i & 255}` });
  }
  return s;
}
const own = { devices: [{ name: 'flannel.1', kind: 'vxlan' as const }] };
const ns = 'twbench-' + process.pid;
const fresh = async (dev: boolean) => {
  await run(['ip', 'netns', 'add', ns]); await run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
  if (dev) {
    await run(['ip', 'link', 'add', 'flannel.1', 'address', '0e:aa:00:00:00:01', 'mtu', '1450', 'type', 'vxlan', 'id', '1', 'dstport', '8472', 'nolearning'], { netns: ns });
    await run(['ip', 'addr', 'add', '10.0.0.0/32', 'dev', 'flannel.1'], { netns: ns });
    await run(['ip', 'link', 'set', 'flannel.1', 'up'], { netns: ns });
  }
};
const drop = () => run(['ip', 'netns', 'del', ns]);
const want = state(N);
const raw = { ip: [] as string[], br: [] as string[] };
for (const n of want.neighbours) raw.ip.push(`neigh replace ${n.ip} lladdr ${n.mac} dev flannel.1 nud permanent`);
for (const r of want.routes) raw.ip.push(`route add ${r.dst} via ${r.via} dev flannel.1 onlink proto 122`);
for (const f of want.fdb) raw.br.push(`fdb replace ${f.mac} dev flannel.1 dst ${f.dst} self permanent`);
const f = (x: number) => x.toFixed(0).padStart(5);
console.log(`${N} peers (${N * 3} entries), ms`);
console.log('round | raw bridge+ip -batch | reconcile from empty (read/plan/apply) | no-op reconcile | one fdb change | one peer removed');
for (let round = 0; round < 5; round++) {
  await fresh(true);
  let t = performance.now();
  await run(['bridge', '-force', '-batch', '-'], { netns: ns, input: raw.br.join('\n') + '\n' });
  await run(['ip', '-force', '-batch', '-'], { netns: ns, input: raw.ip.join('\n') + '\n' });
  const base = performance.now() - t;
  await drop(); await fresh(false);
  const r0 = await reconcile(want, own, { netns: ns });
  const again = await reconcile(want, own, { netns: ns });
  const one = state(N); one.fdb[17]!.dst = '172.16.99.99';
  const r2 = await reconcile(one, own, { netns: ns });
  const less = state(N); less.routes.pop(); less.neighbours.pop(); less.fdb.pop();
  const r3 = await reconcile(less, own, { netns: ns });
  await drop();
  if (r0.failures.length + again.commands + r2.failures.length) throw new Error('unexpected');
  console.log(`${round}     | ${f(base)}               | ${f(r0.timings.totalMs)} (${f(r0.timings.readMs)}/${f(r0.timings.planMs)}/${f(r0.timings.applyMs)})         | ${f(again.timings.totalMs)}           | ${f(r2.timings.totalMs)} (${r2.commands} cmd) | ${f(r3.timings.totalMs)} (${r3.commands} cmds)`);
}
