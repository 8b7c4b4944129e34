// A real Mosquitto broker (Debian's package) on a free loopback port, for
// tests that need a broker other than the embedded one.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { freePort, startProc, tempDir, waitFor, type Proc } from './procs.js';

export const MOSQUITTO = '/usr/sbin/mosquitto';

export async function startMosquitto(): Promise<{ proc: Proc; url: string }> {
  // Installed by scripts/test-deps.sh; a missing broker is a failure, not a skip.
  assert.ok(existsSync(MOSQUITTO), `${MOSQUITTO} is missing: apt-get install mosquitto`);
  const port = await freePort();
  const conf = join(tempDir('twill-mosquitto-'), 'mosquitto.conf');
  writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  const proc = startProc(['-c', conf], { cmd: [MOSQUITTO] });
  const url = `mqtt://127.0.0.1:${port}`;
  await waitFor('mosquitto listening', async () => {
    const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
    await c.endAsync();
    return true;
  });
  return { proc, url };
}
