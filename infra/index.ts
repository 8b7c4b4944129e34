// The whole deployment, in the order its parts depend on each other.
import { prefix } from './config.js';
import { table } from './storage.js';
import { iotEndpoint } from './functions.js';
import { realtime } from './realtime.js';
import './events.js';
import { push } from './push.js';
import './schedule.js';
import { api } from './api.js';
import { nodeApi } from './node-api.js';
import { alarmTopic, dashboard } from './monitoring.js';

export const outputs = {
  api: api.url,
  nodeApi: nodeApi.url,
  push: push.url,
  iotEndpoint,
  authorizer: realtime.authorizer,
  prefix,
  table: table.name,
  dashboard: dashboard.dashboardName,
  alarms: alarmTopic.arn,
};
