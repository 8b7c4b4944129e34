// Lambda: the IoT rules on the agents' hello and status topics. The rules'
// SQL (infra/realtime.ts) hands over the topic and the payload as IoT Core
// received it, base64-encoded so any bytes survive:
//   SELECT topic() AS topic, clientid() AS clientId, encode(*, 'base64') AS payload FROM '<prefix>/v1/node/+/+/hello'
// and the plane takes it exactly as the local controller takes a message
// from its broker (ControlPlane.nodeMessage). It never throws: a bad
// message is logged and answered on the node's own topic, so IoT Core's
// retries are never spent on it, and a hello lost to an outage is sent again
// by the agent, which repeats an unanswered hello.
import type { IoTEvent } from 'aws-lambda';
import { runtime } from '../control/lambda/runtime.js';

/** What the rule's SELECT produces. */
export interface IotRuleMessage {
  topic: string;
  /** the MQTT payload, base64 */
  payload: string;
  clientId?: string;
}

export async function handler(event: IoTEvent<IotRuleMessage>): Promise<void> {
  const rt = runtime();
  const log = rt.log('iot-rule');
  if (typeof event !== 'object' || event === null || typeof event.topic !== 'string' || typeof event.payload !== 'string') {
    log.warn('IoT rule event refused', { reason: "expected {topic, payload} from the rule's SELECT topic() AS topic, encode(*, 'base64') AS payload" });
    return;
  }
  const client = typeof event.clientId === 'string' ? event.clientId.slice(0, 128) : 'iot';
  await rt.plane.nodeMessage(event.topic, Buffer.from(event.payload, 'base64'), client);
}
