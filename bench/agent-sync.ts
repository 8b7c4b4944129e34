// bench/agent-sync: how fast the vxlan backend turns N peer leases into
// kernel state, against the floor of writing the same entries with one
// `ip -batch` and one `bridge -batch`, and what one peer arriving or leaving
// costs at 5,000 peers. Runs in a network namespace of its own (root only):
//   node --import tsx bench/agent-sync.ts
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { silentLogger } from '../core/log.js';
import { Metrics } from '../core/metrics.js';
import { vxlanBackend } from '../agent/backends/vxlan.js';
import { findExternal } from '../agent/iface.js';
import { StateDir } from '../agent/state.js';
import { applyBatch, iproute2 } from '../agent/kernel/index.js';

const SIZES = [1000, 5000];
const ROUNDS = 3;

function peer(i: number): Lease {
  const mac = `0a:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
  return {
    network: 'bench',
    node: `n${i}`,
    subnet: `10.${(i >> 8) & 255}.${i & 255}.0/24`,
    ipv6Subnet: null,
    publicIP: `172.16.${(i >> 8) & 255}.${i & 255}`,
    publicIPv6: null,
    backendType: 'vxlan',
    backendData: { VtepMAC: mac },
    expiresAt: null,
    createdAt: new Date(0).toISOString(),
    revision: i,
  };
}

const ms = (t0: number) => performance.now() - t0;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function inner(): Promise<void> {
  const config = parseNetConf({ Network: '10.0.0.0/8', Backend: { Type: 'vxlan' } });
  const external = await findExternal({ iface: ['eth0'] }, iproute2());
  const dir = mkdtempSync(join(tmpdir(), 'twill-bench-'));
  const own: Lease = { ...peer(60000), node: 'self', subnet: '10.250.0.0/24', publicIP: '192.168.200.1' };
  const reset = () => spawnSync('ip', ['link', 'del', 'flannel.1']);
  const rows: string[][] = [];
  try {
    for (const n of SIZES) {
      const peers = new Map<string, Lease>();
      for (let i = 1; i <= n; i++) peers.set(`n${i}`, peer(i));

      // Floor: the same device and entries, written by the benchmark itself in one ip and one bridge batch.
      const floor: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        reset();
        const ip = ['link add flannel.1 address 0a:ff:00:00:00:01 mtu 1450 type vxlan id 1 dstport 8472 local 192.168.200.1 dev eth0 nolearning', 'addr add 10.250.0.0/32 dev flannel.1', 'link set dev flannel.1 up'];
        const br: string[] = [];
        for (const p of peers.values()) {
          const gw = (p.subnet as string).split('/')[0];
          ip.push(`neigh replace ${gw} lladdr ${p.backendData.VtepMAC} dev flannel.1 nud permanent`);
          ip.push(`route add ${p.subnet} via ${gw} dev flannel.1 onlink proto 122`);
          br.push(`fdb replace ${p.backendData.VtepMAC} dev flannel.1 dst ${p.publicIP} self permanent`);
        }
        const t0 = performance.now();
        await runBatch('ip', ip);
        await runBatch('bridge', br);
        floor.push(ms(t0));
      }

      // twill: the vxlan backend from an empty namespace (device included).
      const converge: number[] = [];
      const noop: number[] = [];
      let add = NaN;
      let remove = NaN;
      for (let r = 0; r < ROUNDS; r++) {
        reset();
        const backend = await vxlanBackend({ config, external, state: new StateDir(dir), log: silentLogger, metrics: new Metrics(), kernel: iproute2() });
        let t0 = performance.now();
        const rep = await backend.reconcile(config, own, peers);
        converge.push(ms(t0));
        if (rep.errors.length) throw new Error(`reconcile errors: ${rep.errors.slice(0, 3).join('; ')}`);
        t0 = performance.now();
        await backend.reconcile(config, own, peers);
        noop.push(ms(t0));
        if (n === SIZES[SIZES.length - 1] && r === ROUNDS - 1) {
          // One peer arrives, then one leaves: the agent passes just that peer as changed.
          const extra = peer(n + 1);
          peers.set(extra.node, extra);
          t0 = performance.now();
          const a = await backend.reconcile(config, own, peers, new Set([extra.node]));
          add = ms(t0);
          peers.delete('n1');
          t0 = performance.now();
          const d = await backend.reconcile(config, own, peers, new Set(['n1']));
          remove = ms(t0);
          if (a.errors.length || d.errors.length) throw new Error('incremental change failed');
          verify(peers);
        }
      }
      const c = median(converge);
      const f = median(floor);
      rows.push([String(n), String(n * 3), f.toFixed(0), c.toFixed(0), (c / f).toFixed(2), median(noop).toFixed(0)]);
      if (!Number.isNaN(add)) rows.push(['', '', '', '', '', '', add.toFixed(1), remove.toFixed(1)]);
    }
  } finally {
    reset();
    rmSync(dir, { recursive: true, force: true });
  }
  const header = ['peers', 'entries', 'floor ms', 'twill ms', 'ratio', 'no-op pass ms', '+1 peer ms', '-1 peer ms'];
  console.log(`\nvxlan backend sync, median of ${ROUNDS} rounds (goal: ratio <= 1.5; one change at 5,000 peers < 20 ms)\n`);
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => header.map((_, i) => (cells[i] ?? '').padStart(width[i] as number)).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log('\nfloor: the same device and entries written by one `ip -batch` and one `bridge -batch` run by the benchmark itself.');
  console.log('twill: vxlanBackend.reconcile from an empty namespace (reads, plans and applies; device included).');
  console.log('no-op pass: the periodic full resync when the kernel already matches. +1/-1: the change path (no read).');
}

async function runBatch(tool: 'ip' | 'bridge', lines: string[]): Promise<void> {
  const r = await applyBatch(tool, lines);
  if (r.failures.length) throw new Error(`${tool} batch: ${r.failures[0]?.command}: ${r.failures[0]?.error}`);
}

/** The change path must leave the kernel exactly as a full pass would. */
function verify(peers: Map<string, Lease>): void {
  const routes = JSON.parse(execFileSync('ip', ['-j', 'route', 'show', 'proto', '122']).toString()) as unknown[];
  if (routes.length !== peers.size) throw new Error(`expected ${peers.size} routes after the changes, found ${routes.length}`);
}

if (!process.env.TWILL_BENCH_INNER) {
  // Outer: make a namespace with an "underlay" interface, re-run inside, clean up.
  const ns = `twill-bench-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', ns]);
    const sh = (args: string[]) => execFileSync('ip', ['-n', ns, ...args]);
    sh(['link', 'set', 'lo', 'up']);
    sh(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1']);
    sh(['addr', 'add', '192.168.200.1/24', 'dev', 'eth0']);
    sh(['link', 'set', 'eth0', 'up']);
    sh(['link', 'set', 'eth1', 'up']);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', new URL(import.meta.url).pathname], {
      stdio: 'inherit',
      env: { ...process.env, TWILL_BENCH_INNER: '1' },
    });
    process.exitCode = r.status ?? 1;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
} else {
  await inner();
}
