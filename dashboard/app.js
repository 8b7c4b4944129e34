// twill's dashboard: signs in with the admin token, then asks the admin API
// for /v1/dashboard every few seconds and draws what it says. Everything a
// node wrote is put into the page as text (textContent), never as markup.
// No framework and no build step: this file is served as it is.
'use strict';

const TOKEN_KEY = 'twill-admin-token';
/**
 * How often the view is asked for while the tab is visible: every 3 s, and
 * every 15 s past 1,000 nodes (on DynamoDB each ask reads every lease; a
 * hidden tab asks nothing).
 */
const POLL_MS = 3000;
const POLL_LARGE_MS = 15000;
const LARGE = 1000;
/** Rows the node table shows at once: past this, the filter narrows them. */
const MAX_ROWS = 500;
/** Cells of a subnet map at most; a larger range shares cells between subnets. */
const MAX_CELLS = 16384;

const $ = (id) => document.getElementById(id);

/** An element with attributes and children; strings become text nodes. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}

const fmt = (n) => Number(n).toLocaleString('en');

let view = null;
let timer = null;

// ---- signing in ----

async function fetchView(token) {
  const res = await fetch('/v1/dashboard', { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (res.ok) return { view: await res.json() };
  let why = `the API answered ${res.status}`;
  try {
    why = (await res.json()).error || why;
  } catch {
    // not JSON: keep the status
  }
  return { refused: res.status === 401 || res.status === 403, why };
}

function showLogin(message) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  view = null;
  $('fabric').hidden = true;
  $('signout').hidden = true;
  $('login').hidden = false;
  $('updated').textContent = '';
  $('login-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

async function signIn(token) {
  $('login-error').textContent = '';
  let r;
  try {
    r = await fetchView(token);
  } catch (e) {
    $('login-error').textContent = `cannot reach the admin API: ${e.message}`;
    return;
  }
  if (!r.view) {
    $('login-error').textContent = r.refused ? `Refused: ${r.why}` : r.why;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('fabric').hidden = false;
  $('signout').hidden = false;
  render(r.view);
  schedule();
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(poll, view && view.nodes.length > LARGE ? POLL_LARGE_MS : POLL_MS);
}

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return;
  if (document.hidden) return schedule();
  try {
    const r = await fetchView(token);
    if (r.view) render(r.view);
    else if (r.refused) return showLogin(`Signed out: ${r.why}`);
    else $('updated').textContent = `Not updated: ${r.why}; retrying`;
  } catch (e) {
    $('updated').textContent = `Not updated: the admin API is unreachable (${e.message}); retrying`;
  }
  schedule();
}

// ---- what the view says ----

function parseIPv4(s) {
  const p = s.split('.').map(Number);
  return ((p[0] * 256 + p[1]) * 256 + p[2]) * 256 + p[3];
}

function agentText(n, net) {
  if (!n.agent) return n.registered ? 'never connected' : net && net.cloud ? 'no agent (cloud instance)' : 'no agent (no credentials)';
  if (n.agent.state !== 'online') return n.agent.state;
  return n.agent.inSync === false ? 'online, out of sync' : 'online';
}

function problemsOf(n) {
  const p = [];
  if (n.registered && !n.agent) p.push('never connected');
  if (n.agent && n.agent.state !== 'online') p.push(n.agent.state);
  if (n.agent && n.agent.inSync === false) p.push('out of sync');
  if (n.agent && n.agent.errors.length) p.push('errors');
  if (n.route && n.route.state !== 'ok') p.push(`route ${n.route.state}`);
  if (n.registered && !n.subnet && !n.ipv6Subnet) p.push('no lease');
  return p;
}

function render(v) {
  view = v;
  $('updated').textContent = `Updated ${new Date(v.time).toLocaleTimeString('en-GB')} · ${fmt(v.networks.length)} network${v.networks.length === 1 ? '' : 's'} · ${fmt(v.nodes.length)} node${v.nodes.length === 1 ? '' : 's'}`;
  renderNetworks(v);
  renderDetails(v);
  renderNodes();
}

function renderNetworks(v) {
  const rows = v.networks.map((n) => {
    const mine = v.nodes.filter((x) => x.network === n.name);
    const online = mine.filter((x) => x.agent && x.agent.state === 'online').length;
    const offline = mine.filter((x) => x.agent && x.agent.state !== 'online').length;
    const outOfSync = mine.filter((x) => x.agent && x.agent.state === 'online' && x.agent.inSync === false).length;
    const addresses = [n.ipv4 && `${n.ipv4.network} (/${n.ipv4.subnetLen} each)`, n.ipv6 && `${n.ipv6.network} (/${n.ipv6.subnetLen} each)`].filter(Boolean).join(', ');
    const free = [n.ipv4 && `IPv4 ${fmt(Math.max(0, n.ipv4.size - n.leases))} of ${fmt(n.ipv4.size)}`, n.ipv6 && `IPv6 ${fmt(Math.max(0, n.ipv6.size - n.leases))}`].filter(Boolean).join(', ');
    const agents = `${fmt(online)} online, ${fmt(offline)} offline${outOfSync ? `, ${fmt(outOfSync)} out of sync` : ''}`;
    return el('tr', {}, el('th', { scope: 'row' }, el('a', { href: `#net-${n.name}` }, n.name)), el('td', {}, n.backend), el('td', {}, addresses), el('td', {}, fmt(n.leases)), el('td', {}, free), el('td', {}, agents), el('td', {}, fmt(n.revision)));
  });
  $('networks').tBodies[0].replaceChildren(...rows);
  const select = $('network-filter');
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '' }, 'all'), ...v.networks.map((n) => el('option', { value: n.name, selected: n.name === chosen }, n.name)));
}

function renderDetails(v) {
  const sections = v.networks.map((n) => {
    const mine = v.nodes.filter((x) => x.network === n.name);
    const parts = [el('h2', { id: `net-${n.name}` }, `Network ${n.name}`)];
    if (n.ipv4) parts.push(subnetMap(n, mine));
    if (n.ipv6) {
      const taken = mine.filter((x) => x.ipv6Subnet).length;
      parts.push(el('p', {}, `IPv6: ${fmt(taken)} subnets of /${n.ipv6.subnetLen} leased between ${n.ipv6.min} and ${n.ipv6.max}.`));
    }
    if (n.cloud) parts.push(cloudPart(n, mine));
    return el('section', { class: 'network', 'aria-labelledby': `net-${n.name}` }, parts);
  });
  $('details').replaceChildren(...sections);
}

/** Every subnet between SubnetMin and SubnetMax as a cell: taken, reserved or free. */
function subnetMap(n, mine) {
  const r = n.ipv4;
  const min = parseIPv4(r.min);
  const step = 2 ** (32 - r.subnetLen);
  const per = Math.ceil(r.size / MAX_CELLS);
  const cells = Math.ceil(r.size / per);
  const taken = new Uint32Array(cells);
  const reserved = new Uint32Array(cells);
  const who = new Map();
  let nTaken = 0;
  let nReserved = 0;
  for (const x of mine) {
    if (!x.subnet) continue;
    const i = Math.floor((parseIPv4(x.subnet.split('/')[0]) - min) / step);
    if (i < 0 || i >= r.size) continue; // outside the range (a reservation made before SubnetMin moved)
    const c = Math.floor(i / per);
    if (x.reserved) { reserved[c]++; nReserved++; } else { taken[c]++; nTaken++; }
    if (per === 1) who.set(c, x);
  }
  const cols = Math.min(128, Math.max(16, Math.ceil(Math.sqrt(cells * 2))));
  const px = Math.max(4, Math.min(20, Math.floor(768 / cols)));
  const rows = Math.ceil(cells / cols);
  const summary = `IPv4 subnets /${r.subnetLen} from ${r.min} to ${r.max}: ${fmt(nTaken)} taken, ${fmt(nReserved)} reserved, ${fmt(r.size - nTaken - nReserved)} free of ${fmt(r.size)}${per > 1 ? ` (each cell is ${fmt(per)} subnets)` : ''}.`;
  const canvas = el('canvas', { width: cols * px, height: rows * px, role: 'img', 'aria-label': summary, class: 'map' });
  const g = canvas.getContext('2d');
  for (let c = 0; c < cells; c++) {
    const span = Math.min(per, r.size - c * per);
    const t = taken[c];
    const s = reserved[c];
    let color = '#d9dde3'; // free
    if (t + s > 0) {
      const share = Math.max(0.35, (t + s) / span);
      color = t >= s ? `rgba(31, 95, 168, ${share})` : `rgba(184, 110, 0, ${share})`;
    }
    g.fillStyle = color;
    g.fillRect((c % cols) * px, Math.floor(c / cols) * px, px - 1, px - 1);
  }
  const tip = el('p', { class: 'tip' }, 'Point at a cell to see its subnet.');
  canvas.addEventListener('mousemove', (e) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor((e.clientY - box.top) / px) * cols + Math.floor((e.clientX - box.left) / px);
    if (c < 0 || c >= cells) return;
    const first = min + c * per * step;
    const ip = (a) => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
    if (per === 1) {
      const x = who.get(c);
      tip.textContent = `${ip(first)}/${r.subnetLen}: ${x ? `${x.reserved ? 'reserved for' : 'taken by'} ${x.name}` : 'free'}`;
    } else {
      tip.textContent = `${ip(first)} and the next ${fmt(per - 1)} subnets: ${fmt(taken[c])} taken, ${fmt(reserved[c])} reserved`;
    }
  });
  const legend = el('ul', { class: 'legend' },
    el('li', {}, el('span', { class: 'swatch taken' }), `taken (${fmt(nTaken)})`),
    el('li', {}, el('span', { class: 'swatch reserved' }), `reserved (${fmt(nReserved)})`),
    el('li', {}, el('span', { class: 'swatch free' }), `free (${fmt(r.size - nTaken - nReserved)})`));
  return el('figure', {}, canvas, el('figcaption', {}, summary), legend, tip);
}

/** Where a route limit came from, in the words twill status uses (control/routes/clouds/cloud.ts limitLabel). */
function limitText(source) {
  return { quota: 'account quota', RouteLimit: 'Backend.RouteLimit', default: 'documented default' }[source] || 'documented default';
}

/** How a node is reached: its route's state on a cloud network, and on one with an overlay, route or overlay and why. */
function routeCell(x) {
  if (x.route && x.route.state === 'error') return `error: ${x.route.reason}`;
  if (x.reach) return x.reach.via === 'route' ? 'route' : x.route && x.route.reason.startsWith('overlay (') ? x.route.reason : `overlay (${x.reach.why})`;
  if (!x.route) return '';
  return x.route.state === 'ok' ? 'ok' : `${x.route.state}: ${x.route.reason}`;
}

function cloudPart(n, mine) {
  const parts = [el('h3', {}, 'VPC routes')];
  if (!n.cloud.tables.length) parts.push(el('p', {}, 'No reconcile has reported this network\'s route tables yet.'));
  else {
    parts.push(el('ul', { class: 'tables' }, n.cloud.tables.map((t) => el('li', {},
      el('span', {}, `${t.what}: ${fmt(t.used)} of ${fmt(t.limit)} routes (limit: ${limitText(t.source)}${t.why ? `, ${t.why}` : ''})`),
      el('meter', { min: 0, max: t.limit, value: t.used, high: Math.floor(t.limit * 0.9), 'aria-label': `${t.what} use` })))));
  }
  if (n.cloud.overlay) {
    // A network with an overlay: a node without its route is reached over the overlay, and says why.
    parts.push(el('p', {}, `${fmt(n.cloud.overlay.route)} node${n.cloud.overlay.route === 1 ? '' : 's'} reached through their route, ${fmt(n.cloud.overlay.overlay)} over the overlay.`));
    const over = mine.filter((x) => x.reach && x.reach.via === 'overlay');
    if (over.length) {
      parts.push(el('h3', {}, `Nodes over the overlay (${fmt(over.length)})`));
      parts.push(el('ul', { class: 'pending' }, over.slice(0, MAX_ROWS).map((x) => el('li', {}, el('strong', {}, x.name), ` ${x.reach.why}`))));
    }
  }
  const waiting = mine.filter((x) => x.route && x.route.state !== 'ok');
  if (waiting.length) {
    parts.push(el('h3', {}, `Nodes without their route (${fmt(waiting.length)})`));
    parts.push(el('ul', { class: 'pending' }, waiting.slice(0, MAX_ROWS).map((x) => el('li', {}, el('strong', {}, x.name), ` ${x.route.state}: ${x.route.reason}`))));
  } else if (mine.length && !n.cloud.overlay) {
    parts.push(el('p', {}, 'Every node has its route.'));
  }
  return el('div', { class: 'cloud' }, parts);
}

/** A wireguard node's public key (public: every peer has it), and a rotation asked of it until its agent reports it honoured. */
function keyCell(k) {
  if (!k) return '';
  const parts = [el('code', { class: 'key' }, k.publicKey || 'none published yet')];
  if (k.implementation) parts.push(el('div', {}, `on ${k.implementation}`));
  if (k.rotation === 'pending') parts.push(el('div', {}, `rotation asked (token ${k.token}), not yet reported done`));
  if (k.rotation === 'done') parts.push(el('div', {}, `rotated (token ${k.token})`));
  return parts;
}

function renderNodes() {
  if (!view) return;
  const nets = new Map(view.networks.map((n) => [n.name, n]));
  const q = $('filter').value.trim().toLowerCase();
  const net = $('network-filter').value;
  const onlyProblems = $('problems').checked;
  const match = view.nodes.filter((x) => {
    if (net && x.network !== net) return false;
    if (onlyProblems && problemsOf(x).length === 0) return false;
    if (!q) return true;
    return [x.name, x.subnet, x.ipv6Subnet, x.publicIP, x.publicIPv6, x.key && x.key.publicKey].some((f) => f && f.toLowerCase().includes(q));
  });
  const rows = match.slice(0, MAX_ROWS).map((x) => {
    const n = nets.get(x.network);
    const problems = problemsOf(x);
    const rev = x.agent && x.agent.revision !== null ? `${fmt(x.agent.revision)} of ${fmt(n ? n.revision : 0)}${x.agent.inSync === false ? ' (out of sync)' : ''}` : '';
    const subnet = [x.subnet, x.ipv6Subnet].filter(Boolean).join(', ') + (x.reserved ? ' (reserved)' : '');
    return el('tr', { class: problems.length ? 'problem' : undefined },
      el('th', { scope: 'row' }, x.name),
      el('td', {}, x.network),
      el('td', {}, subnet || 'none'),
      el('td', {}, [x.publicIP, x.publicIPv6].filter(Boolean).join(', ')),
      el('td', {}, agentText(x, n)),
      el('td', {}, rev),
      el('td', {}, routeCell(x)),
      el('td', {}, keyCell(x.key)),
      el('td', {}, x.agent && x.agent.errors.length ? el('ul', {}, x.agent.errors.map((m) => el('li', {}, m))) : ''));
  });
  $('nodes').tBodies[0].replaceChildren(...rows);
  $('nodes-count').textContent = match.length > MAX_ROWS
    ? `Showing ${fmt(MAX_ROWS)} of ${fmt(match.length)} matching nodes: narrow the search to see the rest.`
    : `${fmt(match.length)} of ${fmt(view.nodes.length)} nodes.`;
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void signIn($('token').value.trim());
  });
  $('signout').addEventListener('click', () => showLogin('Signed out.'));
  for (const id of ['filter', 'network-filter', 'problems']) $(id).addEventListener('input', renderNodes);
  document.addEventListener('visibilitychange', () => { if (!document.hidden && view) void poll(); });
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) void signIn(token);
  else $('token').focus();
});
