/**
 * The ram store's snapshot file, line-oriented so a snapshot of a full store is written and read as a stream, never
 * as one huge string: a header line; per object or version a JSON line describing it with the number of content
 * lines that follow, then its content in base64, at most `CHUNK_BYTES` of it per line (a line of JSON holding a
 * whole large object would pass V8's longest string); then an end line with the number of entries, so that a file
 * cut short is refused rather than taken for a smaller store. Format 1 (content inside the entry's line, no end
 * line) is still read.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { writeFileAtomic } from './atomic-file.js';
import { sha256Hex } from './body.js';
import { InvalidArgumentError, NotFoundError } from './errors.js';
import { validateKey } from './keys.js';
import type { ObjectInfo, VersionInfo } from './types.js';
import { isVersionId } from './version-id.js';

const FORMAT = 'kyozo-ram-snapshot';
const FORMAT_VERSION = 2;
/** Raw bytes per content line (48 MiB: 64 MiB of base64). */
const CHUNK_BYTES = 48 * 1024 * 1024;

export type SnapshotEntry =
  | { type: 'object'; info: ObjectInfo; content: Buffer }
  | { type: 'version'; info: VersionInfo; contentType: string; metadata: Record<string, string>; content: Buffer };

type EntryLine = Omit<SnapshotEntry, 'content'> & { parts?: number; content?: string };

export async function writeSnapshot(path: string, entries: Iterable<SnapshotEntry>): Promise<void> {
  const lines = (function* () {
    yield `${JSON.stringify({ format: FORMAT, v: FORMAT_VERSION })}\n`;
    let count = 0;
    for (const { content, ...described } of entries) {
      const parts = Math.ceil(content.length / CHUNK_BYTES);
      yield `${JSON.stringify({ ...described, parts })}\n`;
      for (let at = 0; at < content.length; at += CHUNK_BYTES) yield `${content.subarray(at, at + CHUNK_BYTES).toString('base64')}\n`;
      count++;
    }
    yield `${JSON.stringify({ end: true, entries: count })}\n`;
  })();
  await writeFileAtomic(path, Readable.from(lines), { fsync: true });
}

/**
 * Whether the snapshot at `path` is of format 1, whose writer could list an object or version twice (rewritten while
 * it was written), the later copy the one that counts. Reads its header line only; anything wrong with the file is
 * for `readSnapshot` to report.
 */
export async function snapshotMayRepeat(path: string): Promise<boolean> {
  const input = createReadStream(path);
  input.on('error', () => undefined);
  try {
    for await (const first of createInterface({ input, crlfDelay: Infinity })) {
      try {
        return (JSON.parse(first) as { v?: number }).v === 1;
      } catch {
        return false;
      }
    }
    return false;
  } catch {
    return false;
  } finally {
    input.destroy();
  }
}

/**
 * An entry is taken only as the store would have made it: a key it takes, a version id it mints, its size and etag
 * those of its content, a content type and metadata. Anything else (a damaged or hand-made file) would
 * be served as it is — a Content-Length that is not the body's, a key that can be listed but not read or deleted.
 */
function checkEntry(entry: SnapshotEntry, corrupt: (why: string) => Error): void {
  // As parsed from JSON: any shape at all, until checked.
  const { type, info, content } = entry as { type: unknown; info: Partial<ObjectInfo & VersionInfo>; content: Buffer };
  try {
    if (type !== 'object' && type !== 'version') throw new Error(`an entry of type ${JSON.stringify(type)}`);
    validateKey(info.key as string);
    if ((type === 'version' || info.versionId !== undefined) && !isVersionId(String(info.versionId))) {
      throw new Error(`version id ${JSON.stringify(info.versionId)} is not one this store mints`);
    }
    if (info.size !== content.length) throw new Error(`its size says ${info.size} bytes, its content has ${content.length}`);
    if (sha256Hex(content) !== info.etag) throw new Error('content does not match its etag');
    // Present and of their types; their text is taken as it is (earlier versions stored what later ones refuse).
    const described = (type === 'object' ? info : entry) as { contentType?: unknown; metadata?: unknown };
    if (typeof described.contentType !== 'string' || typeof described.metadata !== 'object' || described.metadata === null) {
      throw new Error('its content type or metadata is missing');
    }
  } catch (error) {
    throw corrupt(`an entry${typeof info?.key === 'string' ? ` of ${JSON.stringify(info.key.slice(0, 64))}` : ''}: ${(error as Error).message}`);
  }
}

export async function* readSnapshot(path: string): AsyncGenerator<SnapshotEntry> {
  const input = createReadStream(path);
  const opened = new Promise<void>((resolve, reject) => input.once('open', () => resolve()).once('error', reject));
  await opened.catch((error: NodeJS.ErrnoException) => {
    throw error.code === 'ENOENT' ? new NotFoundError(`no ram snapshot at ${path}`, { cause: error }) : error;
  });
  const lines = createInterface({ input, crlfDelay: Infinity })[Symbol.asyncIterator]();
  let lineNumber = 0;
  const next = async (): Promise<string | undefined> => {
    const step = await lines.next();
    if (step.done) return undefined;
    lineNumber++;
    return step.value;
  };
  const corrupt = (why: string) => new InvalidArgumentError(`snapshot ${path} is corrupt at line ${lineNumber}: ${why}`);
  const parse = <T>(line: string): T => {
    try {
      return JSON.parse(line) as T;
    } catch {
      throw corrupt('not JSON');
    }
  };

  const first = await next();
  if (first === undefined) throw new InvalidArgumentError(`${path} is empty, not a ram snapshot`);
  const header = parse<{ format?: string; v?: number }>(first);
  if (header.format !== FORMAT || (header.v !== 1 && header.v !== FORMAT_VERSION)) throw new InvalidArgumentError(`${path} is not a ram snapshot`);
  let entries = 0;
  for (let line = await next(); line !== undefined; line = await next()) {
    if (line === '') continue;
    const raw = parse<EntryLine & { end?: boolean; entries?: number }>(line);
    if (raw.end === true) {
      if (raw.entries !== entries) throw corrupt(`the end line counts ${raw.entries} entries, the file holds ${entries}`);
      return;
    }
    let content: Buffer;
    if (header.v === 1) content = Buffer.from(raw.content ?? '', 'base64');
    else {
      const chunks: Buffer[] = [];
      for (let part = 0; part < (raw.parts ?? 0); part++) {
        const chunk = await next();
        if (chunk === undefined) throw corrupt('the file ends inside an entry');
        chunks.push(Buffer.from(chunk, 'base64'));
      }
      content = Buffer.concat(chunks);
    }
    const { parts: _parts, content: _content, ...described } = raw;
    const entry = { ...described, content } as SnapshotEntry;
    checkEntry(entry, corrupt);
    entries++;
    yield entry;
  }
  // Format 1 has no end line; a format 2 file without one was cut short.
  if (header.v !== 1) throw new InvalidArgumentError(`snapshot ${path} is cut short: it has no end line`);
}
