// AWS IoT Core's stand-in and the serverless world behind it, as a process
// of its own, so that it can run in the lab's router namespace, where every
// host reaches it through its default gateway, as hosts reach the real
// endpoint (test/e2e/cluster.ts starts it; the lab never touches the root
// namespace). It serves one network and answers the test's requests, one
// JSON line each on stdin, with one line on stdout tagged WORLD_TAG:
//   {"id":1,"op":"addNode","node":"h1"}   the agent config `twill node add` prints
//   {"id":2,"op":"lease","node":"h1"}     the node's lease, or null
//   {"id":3,"op":"release","node":"h1"}   the lease removed, as an operator does
//   {"id":4,"op":"restart"}               every Lambda container new, and what a start publishes
// It ends when stdin closes, so a test that dies takes it along.
//
//   node --import tsx test/e2e/iot-world.ts DIR HOST NETWORK NETCONF_FILE
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseNetConf } from '../../core/config.js';
import { addNode } from '../../control/http/admin.js';
import { startIotCoreWorld } from '../helpers/iot-core.js';
import { AUTHORIZER, PREFIX } from '../helpers/serverless.js';
import { WORLD_TAG } from './cluster.js';

const [dir, host, network, netconf] = process.argv.slice(2) as [string, string, string, string];
const world = await startIotCoreWorld(dir, host);
const { iot, w } = world;
// As the operator does it: through the admin API's function.
await w.runtimeOf('Api').controller.applyNetwork(network, parseNetConf(JSON.parse(readFileSync(netconf, 'utf8')), {}));

const say = (msg: unknown) => process.stdout.write(`${WORLD_TAG}${JSON.stringify(msg)}\n`);

const ops: Record<string, (req: { node?: string }) => Promise<unknown>> = {
  addNode: async ({ node }) => JSON.stringify(await addNode(w.store, { name: node ?? '', network, broker: iot.mqttsUrl, prefix: PREFIX, authorizer: AUTHORIZER })),
  lease: async ({ node }) => (await w.store.getLease(network, node ?? '')) ?? null,
  release: async ({ node }) => w.runtimeOf('Api').controller.release(network, node ?? ''),
  // Every container new; the scheduled function republishes what a start publishes.
  restart: async () => {
    await w.setEnv({});
    await w.runtimeOf('Maintenance').controller.publishOnStart();
    return true;
  },
  // What the agents did that IoT Core (or its stand-in) refused: a test asserts there is none.
  refusals: async () => ({ refusals: iot.refusals, ruleErrors: iot.ruleErrors }),
};

let closing: Promise<void> | undefined;
const close = () => (closing ??= world.close().then(() => process.exit(0)));
process.on('SIGTERM', () => void close());

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const req = JSON.parse(line) as { id: number; op: string; node?: string };
  const op = ops[req.op];
  if (!op) return say({ id: req.id, error: `unknown op ${req.op}` });
  op(req).then(
    (result) => say({ id: req.id, result }),
    (e: Error) => say({ id: req.id, error: e.message }),
  );
});
lines.on('close', () => void close());
say({ ready: { broker: iot.mqttsUrl, ca: world.ca } });
