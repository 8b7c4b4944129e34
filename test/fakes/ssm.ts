// A small SSM Parameter Store endpoint: GetParameter over the AWS JSON 1.1
// protocol (X-Amz-Target: AmazonSSM.GetParameter), SigV4-signed requests
// only, SecureString values returned only WithDecryption, and SSM's
// ParameterNotFound for a missing name. Enough for the real SSMClient.
// IAM (test/fakes/iam.ts): ssm:GetParameter on the parameter's ARN
// (parameter/<name>, the name's leading slash being the ARN's), refused with
// AccessDeniedException, and an unknown access key with
// UnrecognizedClientException ("Common Errors", SSM API reference).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Iam } from './iam.js';

export interface FakeSsm {
  endpoint: string;
  /** name -> value; change it to rotate a secret */
  readonly parameters: Map<string, { value: string; type: 'String' | 'SecureString' }>;
  readonly calls: { name: string }[];
  /** who may call what (the test's admin keys, unless the caller's IAM was given) */
  readonly iam: Iam;
  close(): Promise<void>;
}

export async function startFakeSsm(iam = new Iam()): Promise<FakeSsm> {
  const parameters = new Map<string, { value: string; type: 'String' | 'SecureString' }>();
  const calls: { name: string }[] = [];
  const send = (res: import('node:http').ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString('utf8')));
    req.on('end', () => {
      if (!/^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/[a-z0-9-]+\/ssm\/aws4_request/.test(String(req.headers.authorization ?? ''))) {
        return send(res, 400, { __type: 'IncompleteSignatureException', message: 'request is not signed for ssm' });
      }
      if (req.headers['x-amz-target'] !== 'AmazonSSM.GetParameter') {
        return send(res, 400, { __type: 'InvalidAction', message: `${String(req.headers['x-amz-target'])} is not supported here` });
      }
      const input = JSON.parse(body || '{}') as { Name?: string; WithDecryption?: boolean };
      const refused = iam.authorize(req.headers.authorization, (s) => [
        { action: 'ssm:GetParameter', resource: `arn:${s.partition}:ssm:${s.region}:${s.account}:parameter${input.Name?.startsWith('/') ? '' : '/'}${input.Name ?? ''}` },
      ]);
      if (refused) return send(res, 400, { __type: refused.kind === 'denied' ? 'AccessDeniedException' : 'UnrecognizedClientException', message: refused.message });
      calls.push({ name: input.Name ?? '' });
      const p = input.Name ? parameters.get(input.Name) : undefined;
      if (!p) return send(res, 400, { __type: 'ParameterNotFound', message: `Parameter ${input.Name} not found.` });
      const value = p.type === 'SecureString' && !input.WithDecryption ? Buffer.from(p.value).toString('base64') : p.value;
      send(res, 200, { Parameter: { Name: input.Name, Type: p.type, Value: value, Version: 1, ARN: `arn:aws:ssm:us-east-1:123456789012:parameter${input.Name}` } });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    parameters,
    calls,
    iam,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
