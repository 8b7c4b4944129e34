/// <reference path="./.sst/platform/config.d.ts" />
// twill's serverless control plane on AWS: `npx sst deploy --stage prod`.
// What it builds and why is in infra/ and docs/serverless.md.
export default $config({
  app(input) {
    return {
      name: 'twill',
      // The table holds every lease and node credential: a production stage
      // keeps its resources when the app is removed; others clean up.
      removal: input?.stage === 'prod' || input?.stage === 'production' ? 'retain' : 'remove',
      protect: input?.stage === 'prod' || input?.stage === 'production',
      home: 'aws',
      // Pinned (SST requires a version): the one SST 4.17's platform is built and typed against.
      providers: { aws: '7.20.0' },
    };
  },
  async run() {
    // Imported here: the infra modules use SST's globals, which exist only while run() runs.
    const { outputs } = await import('./infra/index.js');
    return outputs;
  },
});
