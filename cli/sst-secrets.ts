// A stage's secrets, read where `npx sst secret set` keeps them and the way
// `sst deploy` reads them (SST's "Secret" component docs: secrets are
// encrypted and stored in an S3 bucket in your AWS account; the code is SST's
// pkg/project/provider, aws.go and provider.go):
//
// - the SSM String parameter /sst/bootstrap holds JSON naming the region's
//   state bucket ("state");
// - the SSM SecureString /sst/passphrase/<app>/<stage> holds the stage's key,
//   32 random bytes in base64;
// - the state bucket's object secret/<app>/<stage>.json holds the secrets as
//   one JSON object of name -> value, sealed with AES-256-GCM: a 12-byte
//   nonce, then the ciphertext with its 16-byte tag;
// - `sst secret set --fallback` writes the stage "_fallback" the same way, and
//   a deploy uses a fallback value for each name the stage does not set.
//
// It only reads. Where SST would create something (a first `sst secret set`
// makes the passphrase, a first deploy the bucket), nothing has been set yet.
import { createDecipheriv } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { GetParameterCommand, type SSMClient } from '@aws-sdk/client-ssm';

export const SST_BOOTSTRAP_PARAMETER = '/sst/bootstrap';
export const SST_FALLBACK_STAGE = '_fallback';

export interface StageSecrets {
  /** name -> value, the stage's own over the fallback's */
  values: Map<string, string>;
  /** names whose value is the fallback's */
  fromFallback: Set<string>;
  /** whether SST holds a state for the stage (it was deployed before) */
  deployed: boolean;
  /** the state bucket, when SST was ever used in this account and region */
  bucket?: string;
}

const errorName = (e: unknown) => (e as { name?: string }).name ?? '';

async function parameter(ssm: SSMClient, name: string, decrypt: boolean): Promise<string | undefined> {
  try {
    return (await ssm.send(new GetParameterCommand({ Name: name, WithDecryption: decrypt }))).Parameter?.Value;
  } catch (e) {
    if (errorName(e) === 'ParameterNotFound') return undefined;
    throw e;
  }
}

async function object(s3: S3Client, bucket: string, key: string): Promise<Buffer | undefined> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return r.Body ? Buffer.from(await r.Body.transformToByteArray()) : Buffer.alloc(0);
  } catch (e) {
    if (errorName(e) === 'NoSuchKey') return undefined;
    throw e;
  }
}

/** Opens what SST sealed: nonce (12 bytes), ciphertext, tag (16 bytes), under the base64 passphrase. */
export function openSealed(sealed: Buffer, passphrase: string): string {
  const key = Buffer.from(passphrase, 'base64');
  if (key.length !== 32) throw new Error(`the passphrase is ${key.length} bytes, not the 32 of an AES-256 key`);
  if (sealed.length < 12 + 16) throw new Error(`${sealed.length} bytes are too few for a sealed secret file`);
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]).toString('utf8');
}

async function secretsOf(ssm: SSMClient, s3: S3Client, bucket: string, app: string, stage: string): Promise<Record<string, string>> {
  const sealed = await object(s3, bucket, `secret/${app}/${stage}.json`);
  if (!sealed) return {};
  const passphrase = await parameter(ssm, `/sst/passphrase/${app}/${stage}`, true);
  if (passphrase === undefined) throw new Error(`s3://${bucket}/secret/${app}/${stage}.json exists but the SSM parameter /sst/passphrase/${app}/${stage} that opens it does not`);
  let text: string;
  try {
    text = openSealed(sealed, passphrase);
  } catch (e) {
    throw new Error(`cannot open s3://${bucket}/secret/${app}/${stage}.json with /sst/passphrase/${app}/${stage} (${(e as Error).message}): SST itself would refuse it`);
  }
  const parsed: unknown = JSON.parse(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || Object.values(parsed).some((v) => typeof v !== 'string')) {
    throw new Error(`s3://${bucket}/secret/${app}/${stage}.json is not an object of names and values`);
  }
  return parsed as Record<string, string>;
}

export async function readStageSecrets(ssm: SSMClient, s3: S3Client, app: string, stage: string): Promise<StageSecrets> {
  const bootstrap = await parameter(ssm, SST_BOOTSTRAP_PARAMETER, false);
  if (bootstrap === undefined) return { values: new Map(), fromFallback: new Set(), deployed: false };
  let bucket: unknown;
  try {
    bucket = (JSON.parse(bootstrap) as { state?: unknown }).state;
  } catch {
    bucket = undefined;
  }
  if (typeof bucket !== 'string' || bucket === '') throw new Error(`the SSM parameter ${SST_BOOTSTRAP_PARAMETER} names no state bucket`);
  const [own, fallback, deployed] = await Promise.all([
    secretsOf(ssm, s3, bucket, app, stage),
    secretsOf(ssm, s3, bucket, app, SST_FALLBACK_STAGE),
    s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `app/${app}/${stage}.json` })).then(
      () => true,
      (e: unknown) => {
        if (errorName(e) === 'NotFound' || errorName(e) === 'NoSuchKey') return false;
        throw e;
      },
    ),
  ]);
  const values = new Map(Object.entries(fallback));
  const fromFallback = new Set(values.keys());
  for (const [name, value] of Object.entries(own)) {
    values.set(name, value);
    fromFallback.delete(name);
  }
  return { values, fromFallback, deployed, bucket };
}
