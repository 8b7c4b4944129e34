// The web dashboard as an operator sees it: a real controller (with the
// simulated cloud), real agents and a real headless Chromium (Debian's
// chromium-headless-shell) driven by puppeteer-core. Every assertion reads
// what the page shows a person: the words on it, not the JSON behind it.
// TWILL_SCREENSHOT=FILE saves the signed-in page (docs/dashboard.png is one).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { nodeClientId } from '../../core/acl.js';
import { parseNetConf } from '../../core/config.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, startAgent, startController, withStore, writeNetConf, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
import { removeTempDirs, runTwill, tempDir, waitFor } from '../helpers/procs.js';

const CHROMIUM = '/usr/bin/chromium-headless-shell';
const PSK = 'dashboard-test-psk-'.padEnd(100, '0123456789abcdef');
/** a wireguard network's PSK and a node's public key, as wg genpsk and wg pubkey printed them */
const WG_PSK = 'MyaBuklmlP3GEXabi6mjVJSlpd/jtB/TveVPrna2SKY=';
const WG_KEY = 'KOWLD5rVk7ocFEXqOp5OqmTuxNGOSaFmjhXaBci47SQ=';
/** The page asks every 3 s (dashboard/app.js POLL_MS; 15 s past 1,000 nodes); a change must show within a few of those. */
const SHOWS_WITHIN_MS = 30_000;

describe('the web dashboard, in a browser', () => {
  let dir: string;
  let ctl: ControllerProc;
  let browser: Browser;
  let page: Page;
  let token: string;
  const agents: AgentProc[] = [];

  /** The text a person reads on the page now. */
  const text = () => page.evaluate(() => document.body.innerText);
  const shows = (what: string | RegExp, within = SHOWS_WITHIN_MS) =>
    waitFor(`the page to show ${what}`, async () => {
      const t = await text();
      return typeof what === 'string' ? t.includes(what) : what.test(t);
    }, within, 200).catch(async (e: Error) => { throw new Error(`${e.message}\n--- the page says ---\n${(await text()).slice(0, 4000)}`); });
  const signIn = async (t: string) => {
    await page.goto(`${ctl.api}/dashboard/`);
    await page.waitForSelector('#token', { visible: true });
    await page.type('#token', t);
    await page.click('#login-form button[type=submit]');
  };
  /** The node table's row for a node, cell by cell, as shown. */
  const row = (node: string) => page.evaluate((n) => {
    const r = [...document.querySelectorAll('#nodes tbody tr')].find((tr) => tr.querySelector('th')?.textContent === n);
    return r ? [...r.children].map((c) => (c as HTMLElement).innerText) : undefined;
  }, node);

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium-headless-shell (scripts/test-deps.sh does)`);
    dir = tempDir('twill-dashboard-');
    const dataDir = join(dir, 'data');
    const overlay = await writeNetConf(dir, 'overlay', { Network: '10.70.0.0/16', Backend: { Type: 'alloc' } });
    const cloud = await writeNetConf(dir, 'cloud', { Network: '10.71.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: 1 } });
    const secret = await writeNetConf(dir, 'secure', { Network: '10.72.0.0/16', Backend: { Type: 'ipsec', PSK } });
    const wg = await writeNetConf(dir, 'wg', { Network: '10.73.0.0/16', Backend: { Type: 'wireguard', PSK: WG_PSK } });
    ctl = await startController({ dataDir, networks: { overlay, cloud, secure: secret, wg }, extra: ['--cloud', 'sim', '--reconcile-interval', '200ms'] });
    token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    for (const a of agents) await a.kill().catch(() => {});
    await ctl?.kill();
    removeTempDirs();
  });

  test('the controller says where the dashboard is; the page loads without a token and asks for one', async () => {
    assert.match(ctl.output(), /dashboard: http:\/\/127\.0\.0\.1:\d+\/dashboard\/ \(sign in with the admin token in /);
    assert.doesNotMatch(ctl.output(), new RegExp(token), 'the token itself is never printed');
    const res = await fetch(`${ctl.api}/dashboard/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    await page.goto(`${ctl.api}/`);
    assert.equal(new URL(page.url()).pathname, '/dashboard/', 'the API root leads to the dashboard');
    await shows('Admin token');
    assert.equal(await page.$eval('#fabric', (e) => (e as HTMLElement).hidden), true, 'nothing of the fabric before signing in');
  });

  test('a wrong token is refused, saying so, and shows nothing of the fabric', async () => {
    await signIn('not-the-token');
    await shows('Refused: wrong admin token');
    assert.equal(await page.$eval('#fabric', (e) => (e as HTMLElement).hidden), true);
    assert.doesNotMatch(await text(), /overlay|10\.70\./);
  });

  test('signed in: every network with its addresses, and the subnet map of each', async () => {
    await signIn(token);
    await shows('Networks');
    const t = await text();
    for (const n of ['overlay', 'cloud', 'secure']) assert.match(t, new RegExp(`Network ${n}\\b`));
    assert.match(t, /10\.70\.0\.0\/16 \(\/24 each\)/);
    assert.match(t, /0 taken, 0 reserved, 255 free of 255/, "an empty network's map: SubnetMin .1 to SubnetMax .255");
    assert.ok(!t.includes(PSK), 'the ipsec PSK is nowhere on the page');
    assert.ok(!t.includes(WG_PSK), 'nor the wireguard one');
    assert.ok(!t.includes(token), 'nor the token');
  });

  test('a node joining appears with its lease, public IP, agent state and applied revision', async () => {
    const creds = await addNode(ctl.dataDir, 'web-a', 'overlay', ctl.url);
    await shows(/web-a\s+overlay\s+none\s+never connected/, SHOWS_WITHIN_MS);
    const agent = await startAgent(dir, creds);
    agents.push(agent);
    const lease = await waitFor('web-a leased', () => withStore(ctl.dataDir, (s) => s.getLease('overlay', 'web-a')), 30_000);
    await waitFor('web-a online in the table', async () => (await row('web-a'))?.[4] === 'online', SHOWS_WITHIN_MS, 200);
    const cells = (await row('web-a')) as string[];
    assert.equal(cells[2], lease.subnet);
    assert.equal(cells[3], lease.publicIP);
    assert.match(cells[5] as string, /^\d+ of \d+$/, `applied revision of the network's: ${cells[5]}`);
    await shows('1 taken, 0 reserved, 254 free of 255');
  });

  test('a reservation shows as reserved on the map and in the table', async () => {
    const r = await runTwill(['lease', 'reserve', 'overlay', '--node', 'db-1', '--subnet', '10.70.200.0/24', '--public-ip', '192.0.2.50', '--data-dir', ctl.dataDir]);
    assert.equal(r.code, 0, r.stderr);
    await shows('1 taken, 1 reserved, 253 free of 255');
    await shows(/db-1\s+overlay\s+10\.70\.200\.0\/24 \(reserved\)/);
  });

  test('a cloud network shows its route table against the limit, and a node past it pending with the reason', async () => {
    for (const name of ['vm-1', 'vm-2']) {
      const r = await runTwill(['sim', 'instance', 'start', name, '--network', 'cloud', '--data-dir', ctl.dataDir]);
      assert.equal(r.code, 0, r.stderr);
    }
    await shows(/route table[^:\n]*: 1 of 1 routes/);
    await shows(/Nodes without their route \(1\)/);
    // The reason says where the limit came from: the network's Backend.RouteLimit here.
    await shows(/vm-\d pending: route pending: route table[^\n]* full \(1 of 1, Backend\.RouteLimit\)/);
    const cells = [(await row('vm-1')) as string[], (await row('vm-2')) as string[]];
    assert.deepEqual(cells.map((c) => c[6]?.split(':')[0]).sort(), ['ok', 'pending']);
    assert.match(cells.map((c) => c[4]).join(','), /no agent \(cloud instance\)/);
  });

  test("a node's errors show as text: markup it sends is never markup on the page", async () => {
    const creds = await addNode(ctl.dataDir, 'web-b', 'overlay', ctl.url);
    const hostile = '<img src=x id=injected onerror="document.title=\'owned\'"> route 10.70.9.0/24: File exists';
    const topics = new Topics();
    const c = await mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, 'overlay', 'web-b'), reconnectPeriod: 0 });
    try {
      await c.publishAsync(topics.nodeStatus('overlay', 'web-b'), JSON.stringify({ v: 2, state: 'online', errors: [hostile] }), { qos: 1, retain: true });
      await shows(hostile);
    } finally {
      await c.endAsync();
    }
    assert.equal(await page.$('#injected'), null, 'no element was made from what the node sent');
    assert.notEqual(await page.title(), 'owned');
    await page.click('#problems');
    await shows(/web-b\s+overlay/);
    const t = await text();
    assert.doesNotMatch(t, /^web-a\s/m, 'a healthy node is not among the problems');
    await page.click('#problems');
  });

  test('a wireguard node shows its public key (which the search finds), and a rotation asked of it until its agent reports it done; the PSK is nowhere', async () => {
    const creds = await addNode(ctl.dataDir, 'wg-a', 'wg', ctl.url);
    const topics = new Topics();
    const c = await mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, 'wg', 'wg-a'), reconnectPeriod: 0 });
    try {
      await c.publishAsync(topics.nodeHello('wg', 'wg-a'), JSON.stringify({ v: 2, agentVersion: 'test', publicIP: '127.0.0.77', backendData: { PublicKey: WG_KEY } }), { qos: 1 });
      await waitFor('wg-a leased', () => withStore(ctl.dataDir, (s) => s.getLease('wg', 'wg-a')), 30_000);
      await waitFor('wg-a with its key in the table', async () => (await row('wg-a'))?.[7] === WG_KEY, SHOWS_WITHIN_MS, 200);
      const r = await runTwill(['node', 'rotate-key', 'wg-a', '--data-dir', ctl.dataDir]);
      assert.equal(r.code, 0, r.stderr);
      const token = /\(token ([A-Za-z0-9._:-]+),/.exec(r.stdout)?.[1] as string;
      await shows(`${WG_KEY}\nrotation asked (token ${token}), not yet reported done`);
      await c.publishAsync(topics.nodeStatus('wg', 'wg-a'), JSON.stringify({ v: 2, state: 'online', keyToken: token, implementation: 'wireguard-go' }), { qos: 1, retain: true });
      await shows(`${WG_KEY}\non wireguard-go\nrotated (token ${token})`);
    } finally {
      await c.endAsync();
    }
    await page.type('#filter', WG_KEY.slice(0, 12));
    await shows('1 of ');
    assert.match(await text(), /\nwg-a\s+wg\s/);
    await page.evaluate(() => { (document.getElementById('filter') as HTMLInputElement).value = ''; document.getElementById('filter')!.dispatchEvent(new Event('input')); });
    const cells = (await row('web-a')) as string[];
    assert.equal(cells[7], '', 'an overlay without keys shows none');
    assert.ok(!(await text()).includes(WG_PSK), 'the PSK is nowhere on the page');
  });

  test('10,000 leases: the map and the counts stay readable, the table shows a page and the search finds any node', async () => {
    // The subnets from SubnetMin (the second /24 of the /10) on, as the allocator would hand them out.
    const subnet = (i: number) => `10.${128 + ((i + 1) >> 8)}.${(i + 1) & 255}.0/24`;
    await withStore(ctl.dataDir, async (s) => {
      await s.putNetwork('big', parseNetConf({ Network: '10.128.0.0/10', Backend: { Type: 'alloc' } }, {}), undefined);
      const at = new Date().toISOString();
      const later = new Date(Date.now() + 86_400_000).toISOString();
      for (let i = 0; i < 10_000; i++) {
        await s.createLease({
          network: 'big', node: `n${String(i).padStart(5, '0')}`, subnet: subnet(i), ipv6Subnet: null,
          publicIP: `192.0.2.${(i % 250) + 1}`, publicIPv6: null, backendType: 'alloc', backendData: {}, expiresAt: later, createdAt: at,
        });
      }
    });
    const res = await fetch(`${ctl.api}/v1/dashboard`, { headers: { authorization: `Bearer ${token}`, 'accept-encoding': 'gzip' } });
    assert.equal(res.headers.get('content-encoding'), 'gzip');
    await shows(/IPv4 subnets \/24 from 10\.128\.1\.0 to 10\.191\.255\.0: 10,000 taken, 0 reserved, 6,383 free of 16,383/, 60_000);
    await page.select('#network-filter', 'big');
    await shows('Showing 500 of 10,000 matching nodes');
    await page.type('#filter', 'n07777');
    await shows(new RegExp(`n07777\\s+big\\s+${subnet(7777).replaceAll('.', '\\.')}`));
    if (process.env.TWILL_SCREENSHOT) {
      await page.evaluate(() => { (document.getElementById('filter') as HTMLInputElement).value = ''; document.getElementById('filter')!.dispatchEvent(new Event('input')); });
      await page.select('#network-filter', '');
      await page.setViewport({ width: 1280, height: 1500 });
      await page.evaluate(() => { (document.activeElement as HTMLElement | null)?.blur(); window.scrollTo(0, 0); });
      await page.screenshot({ path: process.env.TWILL_SCREENSHOT });
    }
  });
});
