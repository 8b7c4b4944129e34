// How the agent reaches its broker: the URL and mqtt.js options, built from
// the config file alone, so the same agent talks to the embedded broker,
// Mosquitto, EMQX or AWS IoT Core with nothing but its config changed.
//
// AWS IoT Core with twill's custom authorizer (see docs/serverless.md) takes
// the node's username and password in the MQTT CONNECT, like any broker, plus
// the authorizer's name. IoT Core's rules for that (its "Device communication
// protocols" and "Connecting by using custom authentication" pages):
//   - MQTT over TLS with custom authentication is served on port 443 and only
//     when the client offers the ALPN protocol "mqtt"; without ALPN, port 443
//     expects an X.509 client certificate (ALPN x-amzn-mqtt-ca) and 8883 is
//     X.509 only on the default endpoint.
//   - MQTT over WebSocket with custom authentication is wss on 443, path /mqtt.
//   - The authorizer is named in the username's query string:
//     "node?x-amz-customauthorizer-name=NAME". Over WebSocket it is also put
//     in the upgrade request's query string, which IoT Core reads there.
//   - IoT Core routes on SNI, so the hostname must go in the TLS handshake
//     (mqtt.js does this for names; it is set explicitly here all the same,
//     and never to an address, which SNI cannot carry).
// The authorizer (control/auth/authorizer.ts) strips that query string before it
// reads the node name, and IoT Core base64-encodes the password for it.
import { isIP } from 'node:net';
import type { IClientOptions } from 'mqtt';
import { TwillError } from '../core/errors.js';

/** What the agent's config says about its broker. */
export interface BrokerOptions {
  broker: string;
  username?: string;
  password?: string;
  /** AWS IoT Core custom authorizer name; set only when the broker is IoT Core */
  authorizer?: string;
}

export interface BrokerConnection {
  url: string;
  options: IClientOptions;
}

export const AUTHORIZER_QUERY = 'x-amz-customauthorizer-name';
/** ALPN protocol name IoT Core expects for MQTT with custom authentication on 443. */
export const IOT_ALPN = 'mqtt';
const IOT_PORT = 443;
const IOT_WS_PATH = '/mqtt';
/** IoT Core's own limit on an authorizer name. */
const AUTHORIZER_RE = /^[\w=,@-]{1,128}$/;

/**
 * The URL and options to hand to mqtt.connect. `base` carries what does not
 * depend on the broker (client id, will, timers); the broker's address and
 * credentials come from `opts`.
 */
export function brokerConnection(opts: BrokerOptions, base: IClientOptions = {}): BrokerConnection {
  let url: URL;
  try {
    url = new URL(opts.broker);
  } catch {
    throw new TwillError('InvalidConfig', `broker ${JSON.stringify(opts.broker)} is not a URL: use mqtt://HOST:1883, mqtts://HOST:8883, ws://HOST/PATH or wss://HOST/mqtt`);
  }
  const scheme = url.protocol.replace(/:$/, '');
  if (!['mqtt', 'mqtts', 'ws', 'wss', 'tcp', 'ssl', 'tls'].includes(scheme)) {
    throw new TwillError('InvalidConfig', `broker ${opts.broker} has scheme ${scheme}: use mqtt, mqtts, ws or wss`);
  }
  const options: IClientOptions = { ...base, username: opts.username, password: opts.password };
  if (!opts.authorizer) return { url: opts.broker, options };

  // ---- AWS IoT Core with a custom authorizer ----
  const name = opts.authorizer;
  if (!AUTHORIZER_RE.test(name)) {
    throw new TwillError('InvalidConfig', `authorizer ${JSON.stringify(name)} is not an IoT authorizer name: 1 to 128 letters, digits or _=,@-`);
  }
  if (scheme !== 'mqtts' && scheme !== 'wss') {
    throw new TwillError(
      'InvalidConfig',
      `broker ${opts.broker} with an authorizer must use mqtts://ENDPOINT:443 or wss://ENDPOINT/mqtt: AWS IoT Core only takes custom-authorized connections over TLS`,
    );
  }
  if (!opts.username || !opts.password) {
    throw new TwillError('InvalidConfig', 'an authorizer needs the node\'s username and password (from twill node add)');
  }
  if (opts.username.includes('?')) {
    throw new TwillError('InvalidConfig', `username ${JSON.stringify(opts.username)} must be the bare node name: the authorizer is added to it`);
  }
  const query = `${AUTHORIZER_QUERY}=${encodeURIComponent(name)}`;
  options.username = `${opts.username}?${query}`;
  // SNI names a host, never an address (RFC 6066); IoT Core's endpoint is always a name.
  if (!isIP(url.hostname)) options.servername = url.hostname;
  if (!url.port) url.port = String(IOT_PORT);
  if (scheme === 'mqtts') {
    options.ALPNProtocols = [IOT_ALPN];
  } else {
    if (url.pathname === '/' || url.pathname === '') url.pathname = IOT_WS_PATH;
    if (!url.searchParams.has(AUTHORIZER_QUERY)) url.searchParams.set(AUTHORIZER_QUERY, name);
  }
  return { url: url.toString(), options };
}
