// The README's compatibility table ("What twill does with each of flannel's
// settings"), row by row: each row's example is run through what twill does
// with it (net-conf.json through readNetConf, flags and FLANNELD_* variables
// through the agent's command line, subnet.env through the start-up read),
// and the outcome must be the row's first word: same, converted, warning,
// ignored, refused or extension (twill's own option, which flanneld ignores). And the other way round: every option of a backend's
// spec and every flanneld flag twill knows has a row.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FLAGS, envName, parseAgentArgs, type AgentFlags } from '../../cli/agent-flags.js';
import { BACKEND_SPECS, isBackendType } from '../../core/backends/index.js';
import { readNetConf } from '../../core/config.js';
import { ConfigError, TwillError } from '../../core/errors.js';
import { previousSubnets } from '../../agent/subnet-env.js';
import { ROOT } from '../helpers/procs.js';

interface Row { where: string; name: string; example: string; fate: string; text: string }

function rows(): Row[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('<!-- compat:start -->'), readme.indexOf('<!-- compat:end -->'));
  const out: Row[] = [];
  for (const line of table.split('\n')) {
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (cells.length !== 4 || cells[0] === 'where' || cells[0]?.startsWith('---')) continue;
    const [where, name, example, text] = cells as [string, string, string, string];
    const tick = (s: string) => /`([^`]+)`/.exec(s)?.[1] ?? s;
    out.push({ where, name: tick(name), example: tick(example), fate: (/^(same|converted|warning|ignored|refused|extension)\b/.exec(text) ?? [''])[0], text });
  }
  return out;
}

const ROWS = rows();
const PSK = 'k'.repeat(96);
const NET = { Network: '10.244.0.0/16' };
const DUAL = { ...NET, EnableIPv6: true, IPv6Network: 'fd00::/48' };

const json = (example: string): unknown => (example === '<96 characters>' || example === '"<96 characters>"' ? PSK : JSON.parse(example));

function outcome(conf: unknown): { warnings: string[]; error?: string; backend?: Record<string, unknown> } {
  try {
    const r = readNetConf(JSON.stringify(conf), {});
    return { warnings: r.warnings, backend: r.config.Backend as unknown as Record<string, unknown> };
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return { warnings: [], error: e.errors.join('\n') };
  }
}

function agentArgs(example: string): AgentFlags | TwillError {
  try {
    return parseAgentArgs(example.split(' '), {});
  } catch (e) {
    assert.ok(e instanceof TwillError, String(e));
    return e;
  }
}

test('the table has a row of each kind and every row names its outcome', () => {
  assert.ok(ROWS.length > 60, `only ${ROWS.length} rows read`);
  for (const r of ROWS) assert.notEqual(r.fate, '', `row ${r.where} ${r.name} says neither same, converted, warning, ignored, refused nor extension: ${r.text}`);
});

describe('every row does what it says', () => {
  for (const r of ROWS) {
    test(`${r.where} ${r.name} (${r.example}): ${r.fate}`, () => {
      if (r.where === 'net-conf.json') {
        const o = outcome({ ...DUAL, Backend: { Type: 'vxlan' }, [r.name]: json(r.example) });
        assert.equal(o.error, undefined);
        const warned = o.warnings.some((w) => w.startsWith(`${r.name}:`));
        assert.equal(warned, r.fate === 'warning', o.warnings.join('\n'));
      } else if (r.where === 'Backend.Type') {
        const type = String(json(r.example));
        const extra = type === 'ipsec' ? { PSK } : type === 'ali-vpc' ? { AccessKeyID: 'a', AccessKeySecret: 'b' } : {};
        const o = outcome({ ...NET, Backend: { Type: type, ...extra } });
        if (r.fate === 'refused') assert.match(o.error ?? '', new RegExp(`Backend\\.Type "${type}" is not known: `));
        else assert.equal(o.backend?.Type, type.toLowerCase(), o.error);
      } else if (isBackendType(r.where)) {
        const extra = r.where === 'ipsec' && r.name !== 'PSK' ? { PSK } : r.where === 'ali-vpc' ? { AccessKeyID: 'a', AccessKeySecret: 'b' } : {};
        const o = outcome({ ...NET, Backend: { Type: r.where, ...extra, [r.name]: json(r.example) } });
        assert.equal(o.error, undefined);
        const warned = o.warnings.some((w) => w.startsWith(`Backend.${r.name}:`));
        assert.equal(warned, r.fate === 'warning', o.warnings.join('\n'));
        if (r.fate === 'same') {
          const v = json(r.example);
          assert.deepEqual(o.backend?.[r.name], r.name === 'RouteTableID' ? [v] : v);
        }
        if (r.fate === 'extension') {
          // read, every default filled in, and what the example gives kept
          const given = json(r.example) as Record<string, unknown>;
          const got = o.backend?.[r.name] as Record<string, unknown> | undefined;
          assert.ok(got, `Backend.${r.name} is not in the effective config`);
          for (const [k, v] of Object.entries(given)) assert.equal(got[k], v, `Backend.${r.name}.${k}`);
        }
      } else if (r.where === 'flag') {
        const f = agentArgs(r.example);
        if (r.fate === 'refused') {
          assert.ok(f instanceof TwillError && /means nothing to twill: /.test(f.message), String(f));
        } else {
          assert.ok(!(f instanceof TwillError), String(f));
          const name = r.name.replace(/^-+/, '');
          assert.equal(f.ignored.includes(name), r.fate === 'ignored');
        }
      } else if (r.where === 'variable') {
        const [k, v] = r.example.split('=') as [string, string];
        assert.deepEqual(parseAgentArgs([], { [k]: v }).file, parseAgentArgs([`--${k.slice('FLANNELD_'.length).toLowerCase().replaceAll('_', '-')}=${v}`]).file);
      } else if (r.where === 'subnet.env') {
        const dir = mkdtempSync(join(tmpdir(), 'twill-compat-'));
        try {
          writeFileSync(join(dir, 'subnet.env'), `${r.example}\n`);
          assert.deepEqual(previousSubnets(join(dir, 'subnet.env')), { subnet: '10.244.7.0/24' });
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      } else {
        assert.fail(`row of unknown kind ${r.where}`);
      }
    });
  }
});

describe('nothing twill knows is missing from the table', () => {
  test("every backend option flannel has, as each type's spec lists it", () => {
    for (const type of ['vxlan', 'host-gw', 'wireguard', 'udp', 'ipip', 'ipsec', 'aws-vpc', 'gce', 'ali-vpc'] as const) {
      const spec = BACKEND_SPECS[type];
      // RouteLimit and KeyRotation are twill's own
      for (const option of [...spec.options, ...(spec.windowsOnly ?? [])].filter((o) => o !== 'RouteLimit' && o !== 'KeyRotation')) {
        assert.ok(ROWS.some((r) => r.where === type && r.name === option), `no row for ${type} ${option}`);
      }
    }
  });
  test('every flanneld flag, and the variable of each behaves as its flag', () => {
    for (const f of FLAGS.filter((x) => x.flannel)) {
      const row = ROWS.find((r) => r.where === 'flag' && r.name.replace(/^-+/, '') === f.name);
      assert.ok(row, `no row for flanneld's --${f.name}`);
      if (row.fate === 'refused' || row.fate === 'ignored' || f.name === 'version') continue;
      // the row's example, given as the flag's variable instead
      const arg = row.example.split(' ');
      const value = arg.length > 1 ? (arg[1] as string) : (arg[0] as string).includes('=') ? (arg[0] as string).split('=').slice(1).join('=') : 'true';
      const fromEnv = parseAgentArgs([], { [envName(f.name)]: value });
      const fromFlag = parseAgentArgs(arg);
      assert.deepEqual([fromEnv.file, fromEnv.logLevel], [fromFlag.file, fromFlag.logLevel], envName(f.name));
    }
  });
});
