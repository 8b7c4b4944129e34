// Two small rules about time the agent's parts share.

/** Between half of ms and ms: a fleet that waits this does not act in lockstep. */
export const jitter = (ms: number): number => Math.round(ms / 2 + Math.random() * (ms / 2));

/** Waits for p, or ms, whichever comes first: a shutdown step that may never end is abandoned. */
export async function within(ms: number, p: Promise<unknown> | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}
