// HOST:PORT, the form every listening address takes (the controller's
// --listen and --api-listen, the agent's --metrics-addr and flanneld's
// --healthz-ip with --healthz-port): an IPv6 host in brackets; an empty host
// (":9464") listens on every address, as Node's listen() takes it. One reader
// and one writer, so the flags agree.

export interface HostPort {
  host: string;
  port: number;
}

/** The host and port text names, or undefined when it is not HOST:PORT with a port from 0 to 65535. */
export function parseHostPort(text: string): HostPort | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? m[2] ?? '', port };
}

/** HOST:PORT, an IPv6 host in brackets. */
export function formatHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
