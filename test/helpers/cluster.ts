// A controller and agents as real processes on this machine, talking MQTT
// over TCP on loopback: what an operator runs, started the way they start it.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSubnetEnv } from '../../agent/subnet-env.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { freePort, runTwill, startProc, waitFor, waitForStart, type Proc } from './procs.js';

export interface ControllerProc extends Proc {
  url: string;
  /** the node and admin API (a free port unless --api-listen says otherwise) */
  api: string;
  port: number;
  dataDir: string;
}

export async function writeNetConf(dir: string, name: string, conf: unknown): Promise<string> {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(conf));
  return file;
}

export async function startController(opts: {
  dataDir: string;
  networks: Record<string, string>;
  port?: number;
  broker?: string;
  extra?: string[];
}): Promise<ControllerProc> {
  const port = opts.port ?? (await freePort());
  const args = ['controller', '--data-dir', opts.dataDir, '--listen', `127.0.0.1:${port}`];
  for (const [name, file] of Object.entries(opts.networks)) args.push('--network', `${name}=${file}`);
  if (opts.broker) args.push('--broker', opts.broker);
  args.push(...(opts.extra ?? []));
  const p = startProc(args, { env: { TWILL_LOG_LEVEL: 'debug' } });
  await waitForStart('controller ready', p, (out) => out.includes('controller ready'));
  const api = /controller ready .*api=(http:\/\/\S+)/.exec(p.output())?.[1] ?? '';
  return { ...p, url: opts.broker ?? `mqtt://127.0.0.1:${port}`, api, port, dataDir: opts.dataDir };
}

export interface AgentCreds { broker: string; network: string; node: string; username: string; password: string }

export async function addNode(dataDir: string, node: string, network: string, broker: string): Promise<AgentCreds> {
  const r = await runTwill(['node', 'add', node, '--network', network, '--data-dir', dataDir, '--broker', broker]);
  if (r.code !== 0) throw new Error(`node add failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as AgentCreds;
}

export interface AgentProc extends Proc {
  node: string;
  subnetFile: string;
  stateDir: string;
  metrics: string;
  configFile: string;
}

let nextIP = 1;

/** A page of the network's snapshot from the node API, read as the node `creds`. */
export async function snapshotAs(api: string, creds: { username: string; password: string }, network: string): Promise<{ revision: number; leases: { node: string; revision: number }[] }> {
  const r = await fetch(`${api}/v2/networks/${network}/snapshot?limit=5000`, { headers: { authorization: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` } });
  if (r.status !== 200) throw new Error(`snapshot: HTTP ${r.status} ${await r.text()}`);
  return (await r.json()) as { revision: number; leases: { node: string; revision: number }[] };
}

/** Starts `twill agent --config FILE` with its files under dir; alloc needs no kernel. */
export async function startAgent(dir: string, creds: AgentCreds, extra: string[] = [], existing?: AgentProc): Promise<AgentProc> {
  const configFile = existing?.configFile ?? join(dir, `${creds.node}.agent.json`);
  if (!existing) writeFileSync(configFile, JSON.stringify(creds));
  const subnetFile = existing?.subnetFile ?? join(dir, `${creds.node}.subnet.env`);
  const stateDir = existing?.stateDir ?? join(dir, `${creds.node}.state`);
  const metricsPort = await freePort();
  const publicIP = existing ? undefined : `127.0.0.${(nextIP++ % 250) + 2}`;
  const args = [
    'agent', '--config', configFile, '--subnet-file', subnetFile, '--state-dir', stateDir,
    '--metrics-addr', `127.0.0.1:${metricsPort}`, '--iface', 'lo',
    ...(publicIP ? ['--public-ip', publicIP] : ['--public-ip', readFileSync(join(stateDir, 'public-ip'), 'utf8').trim()]),
    ...extra,
  ];
  const p = startProc(args, { env: { TWILL_LOG_LEVEL: 'debug' } });
  if (publicIP) {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(join(stateDir, 'public-ip'), publicIP);
  }
  return { ...p, node: creds.node, subnetFile, stateDir, metrics: `http://127.0.0.1:${metricsPort}`, configFile };
}

export async function subnetOf(agent: AgentProc, timeoutMs = 30_000): Promise<string> {
  return waitFor(`${agent.node} subnet.env`, () => readSubnetEnv(agent.subnetFile).FLANNEL_SUBNET, timeoutMs);
}

export async function metric(agent: AgentProc, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${agent.metrics}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

/** Opens the store of a controller's data directory for fn (reading what it holds, or tampering with it), and closes it. */
export async function withStore<T>(dataDir: string, fn: (s: SqliteStore) => Promise<T>): Promise<T> {
  const s = new SqliteStore(join(dataDir, 'twill.db'));
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}
