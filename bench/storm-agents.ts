// A worker of bench/storm.ts: many light agents in one process, each the
// agent's real watch (agent/watch.ts: its MQTT session, hello and renewal
// with backoff, list over the node API, changes in revision order) with no
// backend behind it. It reports to the parent how many hold the view the
// parent expects, how many hellos they sent, and their subnets.
import { silentLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { VERSION } from '../core/version.js';
import { Watch } from '../agent/watch.js';

export interface StartCmd {
  cmd: 'start';
  broker: string;
  password: string;
  network: string;
  agents: { node: string; i: number }[];
}
/** what "complete" means from now on */
export interface ExpectCmd {
  cmd: 'expect';
  peers: number;
  without?: string;
  /** a new session after this command is needed too (the broker went away) */
  reconnect: boolean;
}
export type WorkerCmd = StartCmd | ExpectCmd | { cmd: 'stop'; node?: string } | { cmd: 'leases' };
export interface WorkerReport {
  /** how many expect commands this worker had when it counted */
  epoch: number;
  complete: number;
  agents: number;
  hellos: number;
  /** why the others are not complete yet: no lease, listing, catching up, peers short */
  why?: Record<string, number>;
  leases?: [string, string | null][];
}

interface Light {
  node: string;
  watch: Watch;
  sessions: number;
  needSessions: number;
}

const topics = new Topics();
const lights = new Map<string, Light>();
let hellos = 0;
let expect: ExpectCmd = { cmd: 'expect', peers: 0, reconnect: false };
let epoch = 0;

function start(c: StartCmd): void {
  for (const { node, i } of c.agents) {
    const l: Light = { node, sessions: 0, needSessions: 0, watch: undefined as unknown as Watch };
    l.watch = new Watch(
      {
        broker: c.broker, username: node, password: c.password, network: c.network, node, clientId: `twill-${c.network}-${node}`,
        topics, log: silentLogger, helloRetryMs: 5_000, renewMarginMs: 3600_000, pollMs: 300_000,
        will: { v: 2, state: 'offline', agentVersion: VERSION, errors: [] },
        hello: () => {
          if (l.watch.connected) hellos++;
          return { v: 2, agentVersion: VERSION, publicIP: `172.16.${(i >> 8) & 255}.${i & 255}`, backendData: { VtepMAC: `0a:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` } };
        },
      },
      {
        onConfig: () => {},
        onOwn: () => {},
        onView: () => {},
        onProblem: (kind, problem) => {
          if (kind === 'session' && problem === undefined) l.sessions++;
        },
      },
    );
    lights.set(node, l);
    l.watch.start();
  }
}

function complete(l: Light): boolean {
  const v = l.watch.view();
  return v.state === 'in-sync' && !!v.lease && v.peers.size === expect.peers && !(expect.without && v.peers.has(expect.without)) && l.sessions >= l.needSessions;
}

process.on('message', (m: WorkerCmd) => {
  if (m.cmd === 'start') start(m);
  else if (m.cmd === 'expect') {
    expect = m;
    epoch++;
    for (const l of lights.values()) l.needSessions = m.reconnect ? l.sessions + 1 : 0;
  } else if (m.cmd === 'stop') {
    for (const l of [...lights.values()].filter((x) => !m.node || x.node === m.node)) {
      void l.watch.stop();
      lights.delete(l.node);
    }
    if (!m.node) setTimeout(() => process.exit(0), 2500).unref();
  } else if (m.cmd === 'leases') {
    process.send?.({ epoch, complete: -1, agents: lights.size, hellos, leases: [...lights.values()].map((l) => [l.node, l.watch.view().lease?.subnet ?? null]) } satisfies WorkerReport);
  }
});

setInterval(() => {
  let n = 0;
  const why: Record<string, number> = {};
  for (const l of lights.values()) {
    if (complete(l)) n++;
    else {
      const v = l.watch.view();
      const k = !v.lease ? 'no lease' : v.state !== 'in-sync' ? v.state : v.peers.size < expect.peers ? 'peers short' : v.peers.size > expect.peers ? 'peers over' : 'no new session';
      why[k] = (why[k] ?? 0) + 1;
    }
  }
  process.send?.({ epoch, complete: n, agents: lights.size, hellos, why } satisfies WorkerReport);
}, 1000);
