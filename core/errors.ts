// Errors a user sees. Each says what was wrong and, where it helps, what to do.

export class TwillError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'TwillError';
  }
}

/** A net-conf.json that breaks one or more rules; every broken rule is listed. */
export class ConfigError extends TwillError {
  constructor(readonly errors: string[]) {
    super('InvalidConfig', errors.join('; '));
    this.name = 'ConfigError';
  }
}

export class OutOfSubnetsError extends TwillError {
  constructor(network: string, detail: string) {
    super('OutOfSubnets', `network ${network} has no free subnet: ${detail}`);
  }
}

/** A conditional write lost a race; the caller re-reads and tries again. */
export class ConflictError extends TwillError {
  constructor(message: string) {
    super('Conflict', message);
  }
}

export class NotFoundError extends TwillError {
  constructor(message: string) {
    super('NotFound', message);
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A listen that failed, said with the flag that chose the address: a port
 * already taken is the usual first-hour mistake (a second controller, an
 * agent's metrics port beside another agent's).
 */
export function listenError(e: unknown, addr: string, flag: string): TwillError {
  const code = (e as { code?: string }).code;
  if (code === 'EADDRINUSE') return new TwillError('AddressInUse', `${addr} is already in use (${flag}): stop what listens there, or give ${flag} another HOST:PORT (port 0 picks a free one)`);
  if (code === 'EADDRNOTAVAIL') return new TwillError('AddressNotAvailable', `${addr} is not an address of this host (${flag})`);
  if (code === 'EACCES') return new TwillError('AddressNotAllowed', `${addr} needs privileges to listen on (${flag}): use a port above 1023`);
  return new TwillError('ListenFailed', `cannot listen on ${addr} (${flag}): ${errorMessage(e)}`);
}
