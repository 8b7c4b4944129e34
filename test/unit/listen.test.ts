// A port already taken is said with the flag that chose it, and the
// controller that could not start leaves nothing running and stores nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../core/log.js';
import { startLocalController } from '../../control/local/server.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { parseNetConf } from '../../core/config.js';

async function taken(): Promise<{ server: Server; addr: string }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, addr: `127.0.0.1:${(server.address() as { port: number }).port}` };
}

for (const [flag, option] of [['--listen', 'listen'], ['--api-listen', 'apiListen'], ['--metrics-addr', 'metricsAddr']] as const) {
  test(`a controller whose ${flag} address is taken says so, naming ${flag}, and stops`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'twill-listen-'));
    const { server, addr } = await taken();
    try {
      const networks = [{ name: 'demo', config: parseNetConf({ Network: '10.5.0.0/16' }, {}) }];
      const opts = { dataDir: dir, log: silentLogger, listen: '127.0.0.1:0', networks, [option]: addr };
      await assert.rejects(startLocalController(opts), (e: Error) => {
        assert.equal(e.message, `${addr} is already in use (${flag}): stop what listens there, or give ${flag} another HOST:PORT (port 0 picks a free one)`);
        return true;
      });
      // Every address is bound before anything is stored: the failed start changed nothing.
      const store = new SqliteStore(join(dir, 'twill.db'));
      try {
        assert.deepEqual(await store.listNetworks(), []);
      } finally {
        await store.close();
      }
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
