// Upgrades a deployment's DynamoDB table to the item layout this twill reads
// (control/store/dynamo-migrate.ts; docs/serverless.md, "a table from an
// earlier twill"). Uses the AWS SDK's usual credentials and region.
//   node --import tsx cli/migrate-table.ts --table <table name> [--region <region>]
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { migrateTable } from '../control/store/dynamo-migrate.js';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const table = flag('table');
if (!table) {
  console.error('usage: node --import tsx cli/migrate-table.ts --table <table name> [--region <region>]\n(the table is in the stage\'s outputs: `npx sst output --stage <stage>`, "table")');
  process.exit(2);
}
const region = flag('region');
const client = new DynamoDBClient(region ? { region } : {});
try {
  const r = await migrateTable(client, table, (line) => console.error(line));
  console.log(r.current ? `table ${table} already has the current layout: nothing to do` : `table ${table} upgraded: ${Object.entries(r.moved).map(([k, n]) => `${n} ${k}`).join(', ')} moved`);
} catch (e) {
  console.error(`migration of ${table} failed: ${(e as Error).message}\nNothing is lost: run it again to finish.`);
  process.exitCode = 1;
} finally {
  client.destroy();
}
