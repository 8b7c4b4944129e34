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
