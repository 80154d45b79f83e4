/** Named mutexes inside one process: work under a name runs one at a time, in the order it asked. */
import { KeyTurns } from './key-turns.js';

const turns = new KeyTurns();

/** Runs `fn` after every earlier holder of `name` in this process has finished. */
export async function withProcessMutex<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const turn = turns.take(name);
  if (turn.ready !== undefined) await turn.ready;
  try {
    return await fn();
  } finally {
    turn.leave();
  }
}
