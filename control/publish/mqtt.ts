import type { MqttClient } from 'mqtt';
import type { Publisher } from './publisher.js';

/** Publishes through an MQTT client connection to an external broker. */
export class MqttPublisher implements Publisher {
  constructor(private readonly client: MqttClient) {}

  async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1, retain });
  }
}
