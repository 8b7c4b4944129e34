// The store: one DynamoDB table for networks, leases, subnet claims, node
// credentials and statuses (layout in control/store/dynamo-layout.ts).
import { TABLE_SCHEMA } from './schema.js';

export const table = new sst.aws.Dynamo('Table', {
  fields: TABLE_SCHEMA.fields,
  primaryIndex: TABLE_SCHEMA.primaryIndex,
  globalIndexes: TABLE_SCHEMA.globalIndexes,
  // A backstop only: the scheduled expiry removes leases (and their subnet
  // claims) itself; TTL deletes a lease item a week after it expired, should
  // the schedule ever stop.
  ttl: TABLE_SCHEMA.ttl,
  // The table is the truth; everything else can be rebuilt from it.
  deletionProtection: $app.stage === 'prod' || $app.stage === 'production',
  transform: {
    table: (args) => {
      // On-demand: joins come in bursts (a fleet reconnecting) and are idle otherwise.
      args.billingMode = 'PAY_PER_REQUEST';
      // Restore to any second of the last 35 days after a bad write.
      args.pointInTimeRecovery = { enabled: true };
    },
  },
});
