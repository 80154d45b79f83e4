/**
 * The body of a read, as the caller gets it. `socketTimeoutMs` is there for an S3 that stops sending mid-body: the read
 * must fail rather than hang. A socket's idle timer cannot tell that from a caller that stopped reading: its buffers
 * fill, TCP holds S3 back and the socket goes quiet too, and a download S3 was ready to send was cut (TimeoutError).
 * So the request of a read has no socket timer (the policy's timeout bounds it until the headers arrive), and the
 * limit runs here, only while the caller waits for data: from its asking for more until the next chunk comes.
 */
import { finished, Readable } from 'node:stream';
import { ProviderUnavailableError } from './errors.js';

class IdleWaitLimited extends Readable {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: Readable,
    private readonly idleMs: number,
    private readonly what: string,
  ) {
    super();
    source.on('data', (chunk: Buffer) => {
      if (this.push(chunk)) return this.wait();
      // The caller has enough for now: S3 is held back on purpose, its silence does not count.
      this.stopWaiting();
      source.pause();
    });
    source.pause(); // flows only while the caller asks for data (`_read`)
    finished(source, (error) => {
      this.stopWaiting();
      // As Node's own response does: an error is emitted only to a listener. A body its caller let go of unread, its
      // connection then closed ('aborted'), would otherwise end the process.
      if (error) this.destroy(this.listenerCount('error') > 0 ? error : undefined);
      else this.push(null);
    });
  }

  override _read(): void {
    this.wait();
    this.source.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.stopWaiting();
    this.source.destroy();
    callback(error);
  }

  private wait(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => this.destroy(new ProviderUnavailableError(`${this.what}: timed out, S3 sent nothing for ${this.idleMs} ms while the body was read`)),
      this.idleMs,
    );
  }

  private stopWaiting(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** `body` failing once S3 has sent nothing for `idleMs` while the caller waited for data; `what` names the read. */
export function limitIdleWaits(body: Readable, idleMs: number, what: string): Readable {
  return new IdleWaitLimited(body, idleMs, what);
}
