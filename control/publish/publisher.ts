// Where the controller's state goes: retained MQTT messages, QoS 1. An empty
// retained payload removes a topic. Implementations: the embedded broker, an
// MQTT client (Mosquitto, EMQX) and, for the serverless deployment, IoT Core.
export interface Publisher {
  publish(topic: string, payload: string, retain: boolean): Promise<void>;
}
