// Lambda: IoT Core's custom authorizer. IoT Core calls it on every MQTT
// CONNECT (and again every refreshAfterInSeconds on a live connection); the
// answer is the policy the node gets, from control/auth/authorizer.ts. The
// policy's ARNs need this function's own region and account, which the
// invocation context carries.
import type { Context, IoTCustomAuthorizerEvent, IoTCustomAuthorizerResult } from 'aws-lambda';
import { authorize } from '../control/auth/authorizer.js';
import { runtime } from '../control/lambda/runtime.js';

/** arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER] */
function arnParts(arn: string): { region: string; accountId: string } {
  const [, , , region, accountId] = arn.split(':');
  if (!region || !accountId) throw new Error(`cannot read region and account from the function ARN ${arn}`);
  return { region, accountId };
}

export async function handler(event: IoTCustomAuthorizerEvent, context: Pick<Context, 'invokedFunctionArn'>): Promise<IoTCustomAuthorizerResult> {
  const rt = runtime();
  return authorize(event, { store: rt.store, topics: rt.topics, log: rt.log('authorizer'), ...arnParts(context.invokedFunctionArn) });
}
