// Publishes through AWS IoT Core's data plane (HTTPS Publish), for the
// serverless controller: a Lambda holds no MQTT connection between
// invocations, and one signed HTTPS request per message needs none.
// QoS 1 and retain, as on every other broker: IoT Core keeps the last
// retained message per topic for late subscribers, and an empty retained
// payload deletes it, which is how a released lease disappears.
import {
  DeleteConnectionCommand, GetRetainedMessageCommand, IoTDataPlaneClient, ListRetainedMessagesCommand, PublishCommand, type IoTDataPlaneClientConfig,
} from '@aws-sdk/client-iot-data-plane';
import type { Publisher } from './publisher.js';

export interface IotPublisherOptions {
  /** A client to use (and leave open on close); otherwise one is made from clientConfig. */
  client?: IoTDataPlaneClient;
  /**
   * Must name the account's data endpoint (aws iot describe-endpoint
   * --endpoint-type iot:Data-ATS), e.g. https://xxxx-ats.iot.eu-west-1.amazonaws.com:
   * the SDK's default host is not the account's.
   */
  clientConfig?: IoTDataPlaneClientConfig;
}

export class IotPublisher implements Publisher {
  private readonly client: IoTDataPlaneClient;
  private readonly ownsClient: boolean;

  constructor(opts: IotPublisherOptions) {
    this.ownsClient = !opts.client;
    this.client = opts.client ?? new IoTDataPlaneClient(opts.clientConfig ?? {});
  }

  async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    // Throttling and 5xx are retried by the SDK's standard retry strategy;
    // anything left propagates, so the caller's reconcile publishes again.
    try {
      await this.client.send(new PublishCommand({ topic, payload: Buffer.from(payload, 'utf8'), qos: 1, retain }));
    } catch (e) {
      // An account at its retained-message quota throttles every retained
      // publish with a payload ("Using MQTT retained messages"): say so.
      if (retain && payload !== '' && (e as { name?: string }).name === 'ThrottlingException') {
        (e as Error).message = `IoT Core throttled a retained publish to ${topic}: the account may hold its quota of retained messages ("Maximum number of retained messages per account"; the hourly cleanup deletes those the store does not back), or be past a publish rate (${(e as Error).message})`;
      }
      throw e;
    }
  }

  /**
   * The retained message on a topic as IoT Core holds it, or undefined when
   * there is none: how the scheduled republish tells whether the broker is
   * behind the store without publishing anything (control/tasks/republish.ts).
   */
  async retained(topic: string): Promise<string | undefined> {
    try {
      const r = await this.client.send(new GetRetainedMessageCommand({ topic }));
      return r.payload ? Buffer.from(r.payload).toString('utf8') : '';
    } catch (e) {
      if ((e as { name?: string }).name === 'ResourceNotFoundException') return undefined;
      throw e;
    }
  }

  /**
   * The retained topics under a prefix with their payload sizes (IoT Core
   * lists the whole account's, so this filters): the topics a republish must
   * clear when the store no longer backs them.
   */
  async listRetained(prefix: string): Promise<{ topic: string; payloadSize: number }[]> {
    const out: { topic: string; payloadSize: number }[] = [];
    let nextToken: string | undefined;
    do {
      const r = await this.client.send(new ListRetainedMessagesCommand({ maxResults: 200, nextToken }));
      for (const t of r.retainedTopics ?? []) {
        if (t.topic?.startsWith(prefix)) out.push({ topic: t.topic, payloadSize: t.payloadSize ?? 0 });
      }
      nextToken = r.nextToken;
    } while (nextToken);
    return out;
  }

  /**
   * Closes an MQTT client's connection to IoT Core (DeleteConnection), so a
   * removed or rotated node is cut off at once rather than when its policy
   * next refreshes. Its session state goes with it (cleanSession), and its
   * last will is not published: the node is gone, not offline. False when
   * the client was not connected (ResourceNotFoundException).
   */
  async disconnect(clientId: string): Promise<boolean> {
    try {
      await this.client.send(new DeleteConnectionCommand({ clientId, cleanSession: true, preventWillMessage: true }));
      return true;
    } catch (e) {
      if ((e as { name?: string }).name === 'ResourceNotFoundException') return false;
      throw e;
    }
  }

  close(): void {
    if (this.ownsClient) this.client.destroy();
  }
}
