// The agent's own HTTP: /healthz (the process answers), /readyz (readiness,
// agent/readiness.ts) and /metrics, at --metrics-addr; /healthz and /readyz
// alone at flanneld's --healthz-ip:--healthz-port.
import { createServer, type Server } from 'node:http';
import { listenError } from '../core/errors.js';
import { parseHostPort } from '../core/host-port.js';
import type { Metrics } from '../core/metrics.js';
import type { Readiness } from './readiness.js';

export type HealthFlag = '--metrics-addr' | '--healthz-port';

/** Serves /healthz and /readyz at addr, and /metrics unless this is flanneld's --healthz-port. */
export async function serveHealth(addr: string, flag: HealthFlag, agent: { readiness(): Readiness; metrics: Metrics }): Promise<Server> {
  const at = parseHostPort(addr);
  if (!at) throw new Error(`${flag} address ${JSON.stringify(addr)} is not HOST:PORT`);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const r = agent.readiness();
      res.writeHead(r === 'ready' ? 200 : 503, { 'content-type': 'text/plain' }).end(r === 'ready' ? 'ready\n' : `not ready: ${r}\n`);
    } else if (path === '/metrics' && flag === '--metrics-addr') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(agent.metrics.render());
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(listenError(e, addr, flag)));
    server.listen(at.port, at.host, () => resolve());
  });
  return server;
}
