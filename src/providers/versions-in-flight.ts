/**
 * The order in which versions made at once of one key become current, for providers that mint their own version ids
 * (disk, s3 in explicit mode). An id is minted before the body is stored, so versions made at once can reach the
 * step that makes them current out of id order: one older than a version made current meanwhile stays a version
 * and does not become current, as if it had come first. Only versions made through this instance are seen: like
 * the key locks this relies on, it orders one process, not several processes sharing a store.
 */
import { newVersionId } from './version-id.js';

/** Runs `step` (making the version current) unless a newer version of the key was made current meanwhile; true if it ran. */
export type MakeCurrent = (step: () => Promise<unknown>) => Promise<boolean>;

export class VersionsInFlight {
  /** Per key, how many of its versions are being made and the newest id one of them made current. */
  private readonly keys = new Map<string, { count: number; newest?: string }>();

  /**
   * Mints a version id of `key` and runs `fn`, the making of that version, with it counted in flight. Minting and
   * counting are one step: a version minted earlier but still on its way always finds the newer one's mark. `fn`
   * calls `makeCurrent` under the key's lock, so that the check and the step act as one.
   */
  async track<T>(key: string, fn: (versionId: string, makeCurrent: MakeCurrent) => Promise<T>): Promise<T> {
    const versionId = newVersionId();
    const inFlight = this.keys.get(key) ?? { count: 0 };
    this.keys.set(key, inFlight);
    inFlight.count++;
    const makeCurrent: MakeCurrent = async (step) => {
      if (inFlight.newest !== undefined && inFlight.newest > versionId) return false;
      await step();
      inFlight.newest = versionId;
      return true;
    };
    try {
      return await fn(versionId, makeCurrent);
    } finally {
      if (--inFlight.count === 0) this.keys.delete(key);
    }
  }
}
