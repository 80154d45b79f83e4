/**
 * The body of a read, as the caller gets it. `socketTimeoutMs` is there for an S3 that stops sending mid-body: the read
 * must fail rather than hang. A socket's idle timer cannot tell that from a caller that stopped reading: its buffers
 * fill, TCP holds S3 back and the socket goes quiet too, and a download S3 was ready to send was cut (TimeoutError).
 * So the request of a read has no socket timer (the policy's timeout bounds it until the headers arrive), and the
 * limits run here: S3's silence counts while the caller waits for data, from its asking for more until the next chunk
 * comes; the caller's own silence (paused, or never reading) counts too, much longer: its connection is one of a
 * pool's, and callers that take nothing must not hold them all.
 */
import { finished, Readable } from 'node:stream';
import { failureCode, isStorageError, ProviderUnavailableError } from './errors.js';

class IdleWaitLimited extends Readable {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: Readable,
    private readonly idleMs: number,
    private readonly pausedMs: number,
    private readonly what: string,
  ) {
    super();
    source.on('data', (chunk: Buffer) => {
      if (this.push(chunk)) return this.waitForS3();
      // The caller has enough for now: S3 is held back on purpose, its silence does not count; the caller's does.
      source.pause();
      this.waitForCaller();
    });
    source.pause(); // flows only while the caller asks for data (`_read`)
    this.waitForCaller();
    finished(source, (error) => {
      this.disarm();
      if (error) this.fail(isStorageError(error) ? error : brokenOff(what, error));
      else this.push(null);
    });
  }

  override _read(): void {
    this.waitForS3();
    this.source.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.disarm();
    this.source.destroy();
    callback(error);
  }

  private waitForS3(): void {
    this.arm(this.idleMs, `S3 sent nothing for ${this.idleMs} ms while the body was read`);
  }

  private waitForCaller(): void {
    this.arm(this.pausedMs, `its reader took nothing for ${this.pausedMs} ms (its S3 connection let go)`);
  }

  private arm(ms: number, why: string): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fail(new ProviderUnavailableError(`${this.what}: timed out, ${why}`)), ms).unref();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * As Node's own response does, an error is emitted only to a listener: a body its caller let go of unread, its
   * connection then closed ('aborted') or its time up, would otherwise end the process.
   */
  private fail(error: Error): void {
    this.destroy(this.listenerCount('error') > 0 ? error : undefined);
  }
}

/**
 * A body that broke off mid-way (its connection reset or closed: Node's plain `Error('aborted')`) is an S3 that
 * stopped answering, as a failure before any answer is: unavailable, so that a job retries it and the API answers
 * 503, not an error outside the contract (a 500, a job failed for good).
 */
function brokenOff(what: string, error: Error): ProviderUnavailableError {
  return new ProviderUnavailableError(`${what}: the body broke off (${failureCode(error)})`, { cause: error });
}

/**
 * `body` failing once S3 has sent nothing for `idleMs` while the caller waited for data, or the caller has taken
 * nothing for `pausedMs`; `what` names the read.
 */
export function limitIdleWaits(body: Readable, idleMs: number, pausedMs: number, what: string): Readable {
  return new IdleWaitLimited(body, idleMs, pausedMs, what);
}
