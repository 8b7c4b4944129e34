// ipsec: IKEv2 (strongSwan's charon) with a pre-shared key, ESP between hosts.
import { SECRET_MASK } from '../secret.js';
import type { BackendSpec } from './spec.js';

export interface IpsecBackend { Type: 'ipsec'; PSK: string; UDPEncap: boolean; ESPProposal: string }

export const DEFAULT_ESP_PROPOSAL = 'aes128gcm16-sha256-prfsha256-ecp256';
const MIN_PSK_LENGTH = 96;

export const ipsec: BackendSpec<IpsecBackend> = {
  type: 'ipsec',
  summary: 'ESP between hosts, keyed by IKEv2 with a pre-shared key (strongSwan)',
  options: ['PSK', 'UDPEncap', 'ESPProposal'],
  agentData: {},
  nodeSecrets: ['PSK'],
  controlSecrets: [],
  families: [4],
  ipv4OnlyWhy: 'its IKE and ESP policies are built for IPv4 peers only, as flannel\'s are',
  programsKernel: true,
  podTraffic: true,
  read: (f, ctx) => {
    // The key itself never appears in a message, only its length.
    const psk = f.string('PSK', true);
    if (psk === undefined) {
      if (!f.has('PSK')) {
        ctx.errors.push(`Backend.PSK is required for type ipsec: a pre-shared key of at least ${MIN_PSK_LENGTH} characters, e.g. from "openssl rand -hex 48"`);
      }
    } else if (psk.length < MIN_PSK_LENGTH && !(ctx.masked && psk === SECRET_MASK)) {
      ctx.errors.push(`Backend.PSK is ${psk.length} characters: at least ${MIN_PSK_LENGTH} are required`);
    }
    const udpEncap = f.boolean('UDPEncap') ?? false;
    const esp = f.string('ESPProposal');
    if (esp !== undefined && esp.trim() === '') {
      ctx.errors.push(`Backend.ESPProposal is empty: name an ESP proposal, or leave it out for ${DEFAULT_ESP_PROPOSAL}`);
    }
    return { Type: 'ipsec', PSK: psk ?? '', UDPEncap: udpEncap, ESPProposal: esp || DEFAULT_ESP_PROPOSAL };
  },
};
