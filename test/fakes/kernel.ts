// A kernel in memory behind the kernel layer's I/O interface (agent/kernel/io.ts):
// read() returns its tables, apply() runs the iproute2 batch lines twill
// writes (agent/kernel/commands.ts) against them, line by line as
// `ip -force -batch -` does. It is as strict as the kernel where twill relies
// on it: a route is keyed by table, prefix and metric and `route add` of a
// taken key fails with "File exists"; `route del` names the protocol and
// fails for another's route; an entry on a missing device fails with
// "Cannot find device"; deleting a device takes its routes, neighbours, fdb
// entries and addresses with it. A line it does not understand fails, so a
// new command form cannot pass here unnoticed. Every unit test that drives a
// backend or the agent without root runs on this.
import type { KernelIO } from '../../agent/kernel/io.js';
import type { BatchResult, BatchTool } from '../../agent/kernel/batch.js';
import type { ActualState, FdbRecord, Link, LinkRecord, NeighbourRecord, RouteRecord } from '../../agent/kernel/types.js';

export interface FakeLinkInput {
  name: string;
  mtu?: number;
  mac?: string;
  kind?: string;
  /** "ip/prefix", global scope */
  addresses?: string[];
}

const fam = (ip: string) => (ip.includes(':') ? 6 : 4);

class LineError extends Error {}

export class FakeKernel implements KernelIO {
  links: LinkRecord[] = [];
  routes: RouteRecord[] = [];
  neighbours: NeighbourRecord[] = [];
  fdb: FdbRecord[] = [];
  /** every line applied, in order */
  readonly log: string[] = [];
  reads = 0;
  private nextIndex = 1;

  /** A host with an underlay interface (and lo), and a default route through it. */
  static host(o: { iface?: string; cidr: string; mtu?: number; gateway?: string }): FakeKernel {
    const k = new FakeKernel();
    const iface = o.iface ?? 'eth0';
    k.addLink({ name: 'lo', mtu: 65536, addresses: ['127.0.0.1/8'] });
    k.addLink({ name: iface, mtu: o.mtu ?? 1500, mac: '02:00:00:00:00:01', kind: 'veth', addresses: [o.cidr] });
    const [ip, len] = o.cidr.split('/') as [string, string];
    const net = networkOf(ip, Number(len));
    k.routes.push(route({ dst: `${net}/${len}`, dev: iface, protocol: 2, scope: 253 }));
    if (o.gateway) k.routes.push(route({ dst: '0.0.0.0/0', via: o.gateway, dev: iface, protocol: 3 }));
    return k;
  }

  addLink(l: FakeLinkInput): LinkRecord {
    const rec: LinkRecord = {
      index: this.nextIndex++,
      name: l.name,
      ...(l.kind && { kind: l.kind }),
      mtu: l.mtu ?? 1500,
      ...(l.mac && { mac: l.mac }),
      up: true,
      flags: ['UP'],
      addresses: (l.addresses ?? []).map((cidr) => ({ family: fam(cidr), cidr, scope: cidr.startsWith('127.') ? 'host' : 'global' })),
    };
    this.links.push(rec);
    return rec;
  }

  async read(): Promise<ActualState> {
    this.reads++;
    return structuredClone({ links: this.links, routes: this.routes, neighbours: this.neighbours, fdb: this.fdb });
  }

  async readLinks(): Promise<LinkRecord[]> {
    return structuredClone(this.links);
  }

  async apply(tool: BatchTool, commands: readonly string[]): Promise<BatchResult> {
    const result: BatchResult = { tool, applied: 0, failures: [], warnings: [], spawns: 1, durationMs: 0 };
    commands.forEach((command, i) => {
      try {
        this.run(tool, command);
        this.log.push(`${tool} ${command}`);
        result.applied++;
      } catch (e) {
        if (!(e instanceof LineError)) throw e;
        result.failures.push({ line: i + 1, command, error: e.message });
      }
    });
    return result;
  }

  // ---- the commands ----

  private link(name: string | undefined): LinkRecord {
    const l = this.links.find((x) => x.name === name);
    if (!l) throw new LineError(`Cannot find device "${name}"`);
    return l;
  }

  private run(tool: BatchTool, command: string): void {
    const w = command.trim().split(/\s+/);
    const opt = (k: string) => {
      const i = w.indexOf(k);
      return i >= 0 ? w[i + 1] : undefined;
    };
    const [obj, verb] = w;
    if (tool === 'bridge') {
      if (obj !== 'fdb') throw new LineError(`fake kernel: bridge ${command} is not understood`);
      const dev = this.link(opt('dev')).name;
      const mac = w[2] as string;
      const i = this.fdb.findIndex((f) => f.dev === dev && f.mac === mac && f.self);
      if (verb === 'replace') {
        const rec: FdbRecord = { dev, mac, dst: opt('dst'), permanent: true, self: true, state: 'permanent' };
        if (i >= 0) this.fdb[i] = rec;
        else this.fdb.push(rec);
      } else if (verb === 'del') {
        if (i < 0) throw new LineError('RTNETLINK answers: No such file or directory');
        this.fdb.splice(i, 1);
      } else throw new LineError(`fake kernel: bridge ${command} is not understood`);
      return;
    }
    switch (`${obj} ${verb}`) {
      case 'link add': return this.linkAdd(w);
      case 'tuntap add': {
        const name = opt('dev') as string;
        if (this.links.some((l) => l.name === name)) throw new LineError('ioctl(TUNSETIFF): Device or resource busy');
        const rec = this.addLink({ name, kind: 'tun', mtu: 1500 });
        rec.link = { kind: 'tun' };
        rec.up = false;
        rec.flags = [];
        return;
      }
      case 'link del':
      case 'tuntap del': return this.linkDel(this.link(opt('dev')).name);
      case 'link set': {
        const l = this.link(opt('dev'));
        if (opt('mtu')) l.mtu = Number(opt('mtu'));
        if (opt('address')) l.mac = opt('address');
        if (w.includes('up')) { l.up = true; l.flags = ['UP']; }
        if (w.includes('down')) { l.up = false; l.flags = []; }
        return;
      }
      case 'addr add': {
        const l = this.link(opt('dev'));
        const cidr = w[2] as string;
        if (l.addresses.some((a) => a.cidr === cidr)) throw new LineError('RTNETLINK answers: File exists');
        l.addresses.push({ family: fam(cidr), cidr, scope: 'global' });
        return;
      }
      case 'addr del': {
        const l = this.link(opt('dev'));
        const i = l.addresses.findIndex((a) => a.cidr === w[2]);
        if (i < 0) throw new LineError('RTNETLINK answers: Cannot assign requested address');
        l.addresses.splice(i, 1);
        return;
      }
      case 'route add':
      case 'route replace': {
        const blackhole = w[2] === 'blackhole';
        const dst = w[blackhole ? 3 : 2] as string;
        if (blackhole && (opt('dev') !== undefined || opt('via') !== undefined)) throw new LineError('Error: either "to" is duplicate, or "dev" is a garbage.');
        const dev = blackhole ? undefined : this.link(opt('dev')).name;
        const rec = route({ dst, via: opt('via'), dev, blackhole, onlink: w.includes('onlink'), protocol: Number(opt('proto')), table: Number(opt('table') ?? 254), metric: Number(opt('metric') ?? 0) });
        const i = this.routes.findIndex((r) => sameKey(r, rec));
        if (i >= 0 && verb === 'add') throw new LineError('RTNETLINK answers: File exists');
        if (dev && rec.via && !rec.onlink && !this.onLink(dev, rec.via)) throw new LineError('Error: Nexthop has invalid gateway.');
        if (i >= 0) this.routes[i] = rec;
        else this.routes.push(rec);
        return;
      }
      case 'route del': {
        const key = { dst: w[2] as string, table: Number(opt('table') ?? 254), metric: Number(opt('metric') ?? 0) };
        const i = this.routes.findIndex((r) => sameKey(r, key) && (opt('proto') === undefined || r.protocol === Number(opt('proto'))));
        if (i < 0) throw new LineError('RTNETLINK answers: No such process');
        this.routes.splice(i, 1);
        return;
      }
      case 'neigh replace': {
        const ip = w[2] as string;
        const dev = this.link(opt('dev')).name;
        const rec: NeighbourRecord = { family: fam(ip), dev, ip, mac: opt('lladdr'), state: ['PERMANENT'], permanent: true };
        const i = this.neighbours.findIndex((n) => n.dev === dev && n.ip === ip);
        if (i >= 0) this.neighbours[i] = rec;
        else this.neighbours.push(rec);
        return;
      }
      case 'neigh del': {
        const i = this.neighbours.findIndex((n) => n.dev === opt('dev') && n.ip === w[2]);
        if (i < 0) throw new LineError('RTNETLINK answers: No such file or directory');
        this.neighbours.splice(i, 1);
        return;
      }
      default:
        throw new LineError(`fake kernel: ip ${command} is not understood`);
    }
  }

  private linkAdd(w: string[]): void {
    const name = w[2] as string;
    if (this.links.some((l) => l.name === name)) throw new LineError('RTNETLINK answers: File exists');
    const opt = (k: string, from = 3) => {
      const i = w.indexOf(k, from);
      return i >= 0 ? w[i + 1] : undefined;
    };
    const type = opt('type');
    const t = w.indexOf('type');
    let link: Link;
    if (type === 'vxlan') {
      link = { kind: 'vxlan', vni: Number(opt('id', t)), port: Number(opt('dstport', t)), learning: w.includes('learning'), gbp: w.includes('gbp'), ...(opt('local', t) && { local: opt('local', t) }), ...(opt('dev', t) && { dev: opt('dev', t) }) };
    } else if (type === 'ipip') {
      link = { kind: 'ipip', ...(opt('local', t) && { local: opt('local', t) }), ...(opt('dev', t) && { dev: opt('dev', t) }) };
    } else {
      throw new LineError(`Error: Unknown device type "${type}".`);
    }
    if ('dev' in link && link.dev) this.link(link.dev);
    const rec = this.addLink({ name, kind: type, mtu: Number(opt('mtu') ?? 1450), mac: opt('address') ?? randomMac() });
    rec.link = link;
    rec.up = false;
    rec.flags = [];
  }

  private linkDel(name: string): void {
    this.links = this.links.filter((l) => l.name !== name);
    this.routes = this.routes.filter((r) => r.dev !== name);
    this.neighbours = this.neighbours.filter((n) => n.dev !== name);
    this.fdb = this.fdb.filter((f) => f.dev !== name);
  }

  /** A gateway must be inside a prefix of the device, as the kernel checks without onlink. */
  private onLink(dev: string, via: string): boolean {
    const l = this.links.find((x) => x.name === dev);
    return !!l?.addresses.some((a) => {
      const [ip, len] = a.cidr.split('/') as [string, string];
      return a.family === 4 && fam(via) === 4 && networkOf(ip, Number(len)) === networkOf(via, Number(len));
    });
  }

  // ---- drift a test can make by hand, as an operator would with ip ----

  deleteRoute(dst: string): void {
    this.routes = this.routes.filter((r) => r.dst !== dst);
  }

  deleteDevice(name: string): void {
    this.linkDel(name);
  }

  routesVia(dev?: string): RouteRecord[] {
    return this.routes.filter((r) => r.protocol === 122 && (dev === undefined || r.dev === dev));
  }
}

function sameKey(a: { table: number; dst: string; metric: number }, b: { table: number; dst: string; metric: number }): boolean {
  return a.table === b.table && a.dst === b.dst && a.metric === b.metric;
}

function route(r: { dst: string; via?: string; dev?: string; blackhole?: boolean; onlink?: boolean; protocol: number; table?: number; metric?: number; scope?: number }): RouteRecord {
  return {
    family: fam(r.dst),
    table: r.table ?? 254,
    type: r.blackhole ? 6 : 1,
    dst: r.dst,
    metric: r.metric ?? 0,
    protocol: r.protocol,
    scope: r.scope ?? 0,
    ...(r.via && { via: r.via }),
    ...(r.dev && { dev: r.dev }),
    onlink: r.onlink ?? false,
    flags: r.onlink ? ['onlink'] : [],
    multipath: false,
  };
}

function networkOf(ip: string, len: number): string {
  const n = ip.split('.').reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n);
  const mask = len === 0 ? 0n : ((1n << 32n) - 1n) ^ ((1n << BigInt(32 - len)) - 1n);
  const v = n & mask;
  return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
}

function randomMac(): string {
  return `02:${Array.from({ length: 5 }, () => Math.floor(Math.random() * 256).toString(16).padStart(2, '0')).join(':')}`;
}
