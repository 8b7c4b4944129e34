import type { Aedes } from 'aedes';
import type { Publisher } from './publisher.js';

/** Publishes straight into the embedded broker, with no client in between. */
export class AedesPublisher implements Publisher {
  constructor(private readonly broker: Aedes) {}

  publish(topic: string, payload: string, retain: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.broker.publish(
        { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain, dup: false },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }
}
