/** Named mutexes inside one process: work under a name runs one at a time, in the order it asked. */
const tails = new Map<string, Promise<void>>();

/** Runs `fn` after every earlier holder of `name` in this process has finished. */
export async function withProcessMutex<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const previous = tails.get(name) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  const tail = previous.then(() => mine);
  tails.set(name, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (tails.get(name) === tail) tails.delete(name);
  }
}
