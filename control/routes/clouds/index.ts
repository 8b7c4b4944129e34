// Cloud by name (--cloud) or by a network's Backend.Type. Each cloud's SDK is
// loaded only when that cloud is used, so the local controller and the CLI do
// not pay for the three SDKs when they use one or none.
import { TwillError } from '../../../core/errors.js';
import type { Locks } from '../../store/locks.js';
import { CLOUD_KINDS, type Cloud, type CloudKind } from './cloud.js';

export interface CloudOptions {
  /** an endpoint other than the cloud's own, e.g. a local one (GCE and Ali; AWS also reads AWS_ENDPOINT_URL) */
  endpoint?: string;
  /** AWS and Ali region; default from each SDK's usual environment */
  region?: string;
  /** GCE project; default GOOGLE_CLOUD_PROJECT or the credentials' project */
  project?: string;
  /** the controller's data directory: where the simulated cloud keeps its state */
  dataDir?: string;
  /** AWS: credentials other than the SDK's default chain */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Ali: a VPC lock shared with the other processes or function instances on the same store */
  locks?: Locks;
  /** Ali: when the caller must be done (epoch ms); no route change runs past it */
  deadline?: () => number | undefined;
}

export function parseCloudKind(s: string): CloudKind {
  if ((CLOUD_KINDS as readonly string[]).includes(s)) return s as CloudKind;
  throw new TwillError('Usage', `--cloud ${JSON.stringify(s)} is not known: use one of ${CLOUD_KINDS.join(', ')}`);
}

export async function createCloud(kind: CloudKind, opts: CloudOptions = {}): Promise<Cloud> {
  switch (kind) {
    case 'aws': {
      const { AwsCloud } = await import('./aws.js');
      return new AwsCloud({ region: opts.region, endpoint: opts.endpoint, credentials: opts.credentials });
    }
    case 'gce': {
      const { GceCloud } = await import('./gce.js');
      return new GceCloud({ project: opts.project, endpoint: opts.endpoint });
    }
    case 'ali': {
      const { AliCloud } = await import('./ali.js');
      return new AliCloud({ region: opts.region, endpoint: opts.endpoint, locks: opts.locks, deadline: opts.deadline });
    }
    case 'sim': {
      if (!opts.dataDir) throw new TwillError('Usage', 'the simulated cloud needs a data directory to keep its state in');
      const { SimCloud, SimVpc, simFile } = await import('./sim.js');
      return new SimCloud(new SimVpc(simFile(opts.dataDir)));
    }
  }
}
