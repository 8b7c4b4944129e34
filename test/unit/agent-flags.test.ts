// `twill agent`'s command line as a flannel user types it (cli/agent-flags.ts):
// Go's flag syntax, flanneld's flag names and FLANNELD_* variables, and a
// sentence for flanneld's flags that mean nothing to twill.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FLAGS, agentHelp, envName, parseAgentArgs } from '../../cli/agent-flags.js';
import { TwillError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import { agentOptions } from '../../agent/config.js';

const refusal = (args: string[], env: Record<string, string> = {}): string => {
  try {
    parseAgentArgs(args, env);
  } catch (e) {
    assert.ok(e instanceof TwillError && e.code === 'Usage', String(e));
    return e.message;
  }
  assert.fail(`${args.join(' ')} was accepted`);
};

describe("Go's flag syntax, as flanneld reads its flags", () => {
  test('one or two dashes, the value after = or as the next argument; a list flag repeats', () => {
    const f = parseAgentArgs(['-iface', 'eth0', '--iface=10.0.0.5', '-iface-regex=^en', '--subnet-file', '/run/x.env', '-public-ip=192.0.2.7']);
    assert.deepEqual(f.file, { iface: ['eth0', '10.0.0.5'], ifaceRegex: ['^en'], subnetFile: '/run/x.env', publicIP: '192.0.2.7' });
  });
  test("a boolean alone is true, takes Go's true and false spellings after =, and also the next argument", () => {
    assert.equal(parseAgentArgs(['--ip-masq']).file.ipMasq, true);
    assert.equal(parseAgentArgs(['--ip-masq=true']).file.ipMasq, true);
    assert.equal(parseAgentArgs(['-ip-masq=0']).file.ipMasq, false);
    assert.equal(parseAgentArgs(['--iptables-forward-rules=false']).file.iptablesForwardRules, false);
    assert.equal(parseAgentArgs(['--iptables-forward-rules=F']).file.iptablesForwardRules, false);
    // Go would stop reading flags at "false"; twill takes no positional argument, so it is the value
    assert.equal(parseAgentArgs(['--iptables-forward-rules', 'false']).file.iptablesForwardRules, false);
    assert.deepEqual(parseAgentArgs(['--ip-masq', '--iface', 'eth1']).file, { ipMasq: true, iface: ['eth1'] });
    assert.match(refusal(['--ip-masq=yes']), /^--ip-masq must be true or false, not "yes"$/);
  });
  test('numbers are whole numbers; a missing value, a stray argument and an unknown flag are named', () => {
    assert.match(refusal(['--healthz-port=80a']), /^--healthz-port must be a whole number, not "80a"$/);
    assert.match(refusal(['--subnet-file']), /^--subnet-file needs a value \(FILE\)$/);
    assert.match(refusal(['eth0']), /^unexpected argument "eth0": twill agent takes flags only$/);
    assert.match(refusal(['--ifac', 'eth0']), /^unknown flag --ifac: did you mean --iface\? \(twill agent --help lists them\)$/);
    assert.match(refusal(['-x']), /^unknown flag -x/);
  });
});

describe("flanneld's flags", () => {
  test('--subnet-lease-renew-margin in minutes, 1 to 1439 as in flanneld', () => {
    assert.equal(parseAgentArgs(['--subnet-lease-renew-margin=30']).file.renewMargin, '30m');
    assert.match(refusal(['--subnet-lease-renew-margin', '0']), /out of range: from 1 to 1439 minutes/);
    assert.match(refusal(['--subnet-lease-renew-margin', '1440']), /out of range/);
    assert.match(refusal(['--renew-margin', '1h', '--subnet-lease-renew-margin', '30']), /both set the renewal margin: give one/);
  });
  test('--iptables-resync sets the resync interval, in seconds', () => {
    assert.equal(parseAgentArgs(['--iptables-resync', '5']).file.resyncInterval, '5s');
    assert.match(refusal(['--iptables-resync=0']), /at least 1/);
  });
  test('--healthz-ip and --healthz-port, --ip-masq-fully-random-disable, --ip-blackhole-route, --iface-can-reach, --public-ipv6', () => {
    assert.deepEqual(
      parseAgentArgs(['--healthz-ip', '127.0.0.1', '--healthz-port=8285', '--ip-masq-fully-random-disable', '--ip-blackhole-route', '--iface-can-reach=192.0.2.1', '--public-ipv6', 'fd00::5']).file,
      { healthzIP: '127.0.0.1', healthzPort: 8285, ipMasqRandomFully: false, ipBlackholeRoute: true, ifaceCanReach: '192.0.2.1', publicIPv6: 'fd00::5' },
    );
    assert.match(refusal(['--healthz-port=70000']), /is not a port/);
  });
  test("klog's -v sets the log level; -vmodule and -log_backtrace_at are accepted and ignored", () => {
    assert.equal(parseAgentArgs(['-v=2']).logLevel, 'debug');
    assert.equal(parseAgentArgs(['-v', '0']).logLevel, 'info');
    assert.equal(parseAgentArgs(['--log-level', 'warn', '-v=3']).logLevel, 'warn');
    assert.deepEqual(parseAgentArgs(['-vmodule=foo=2']).ignored, ['vmodule']);
  });
  test("kube-flannel.yml's own arguments get the sentence saying what twill does instead", () => {
    const m = refusal(['--ip-masq', '--kube-subnet-mgr']);
    assert.equal(m, "--kube-subnet-mgr is flanneld's and means nothing to twill: twill does not use the Kubernetes API to lease subnets: the twill controller leases them; run the agent with the node config `twill node add` printed (--config FILE)");
    assert.match(refusal(['--etcd-endpoints=http://127.0.0.1:2379']), /^--etcd-endpoints is flanneld's and means nothing to twill: twill has no etcd/);
    assert.match(refusal(['--net-config-path', '/etc/kube-flannel/net-conf.json']), /give it to the controller \(twill controller --network NAME=FILE\)/);
    // switched off, they ask for nothing twill lacks
    assert.deepEqual(parseAgentArgs(['--kube-subnet-mgr=false']).file, {});
  });
});

describe('FLANNELD_* variables', () => {
  test("every flanneld flag has one, named as flanneld names it; twill's own flags have none", () => {
    assert.equal(envName('iface'), 'FLANNELD_IFACE');
    assert.equal(envName('subnet-lease-renew-margin'), 'FLANNELD_SUBNET_LEASE_RENEW_MARGIN');
    assert.deepEqual(parseAgentArgs([], { FLANNELD_IFACE: 'lo', FLANNELD_IP_MASQ: 'true', FLANNELD_SUBNET_FILE: '/run/f.env', FLANNELD_HEALTHZ_PORT: '9000' }).file, {
      iface: ['lo'], ipMasq: true, subnetFile: '/run/f.env', healthzPort: 9000,
    });
    assert.deepEqual(parseAgentArgs([], { FLANNELD_STATE_DIR: '/tmp/x', FLANNELD_FOO: '1' }).file, {});
  });
  test('a flag on the command line beats its variable; an empty variable is unset', () => {
    assert.deepEqual(parseAgentArgs(['--iface', 'eth0'], { FLANNELD_IFACE: 'lo' }).file, { iface: ['eth0'] });
    assert.deepEqual(parseAgentArgs([], { FLANNELD_IFACE: '' }).file, {});
  });
  test('a bad or refused value in a variable names the variable', () => {
    assert.match(refusal([], { FLANNELD_IP_MASQ: 'sure' }), /^FLANNELD_IP_MASQ must be true or false, not "sure"$/);
    assert.match(refusal([], { FLANNELD_KUBE_SUBNET_MGR: 'true' }), /^FLANNELD_KUBE_SUBNET_MGR is flanneld's and means nothing to twill/);
  });
});

test('help lists every flag twill takes, from the same table, and names the refused ones', () => {
  const help = agentHelp();
  for (const f of FLAGS) {
    if (f.flannel === 'refused') assert.ok(help.includes(`--${f.name},`) || help.includes(`--${f.name} are refused`), f.name);
    else assert.match(help, new RegExp(`^  --${f.name}\\b`, 'm'), f.name);
  }
});

test('the default help shows for a flag is the one the agent runs with: giving it changes none of the agent\'s options', () => {
  const base = { broker: 'mqtt://127.0.0.1:1883', network: 'net', node: 'n1' };
  const none = agentOptions(base, {}, silentLogger);
  const cliOnly: string[] = [];
  for (const f of FLAGS.filter((x) => x.default !== undefined)) {
    const file = parseAgentArgs([`--${f.name}=${f.default}`]).file;
    if (Object.keys(file).length === 0) {
      cliOnly.push(f.name);
      continue;
    }
    assert.deepEqual(agentOptions(base, file, silentLogger), none, `--${f.name}=${f.default}`);
  }
  // the two that set no agent option at all: the log level
  assert.deepEqual(cliOnly, ['log-level', 'v']);
  assert.match(agentHelp(), /--iptables-resync SECONDS\n.*\(default 10\)/);
});
