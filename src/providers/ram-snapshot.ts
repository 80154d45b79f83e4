/**
 * The ram store's snapshot file: one JSON line per object or version (content in base64), after a header line.
 * Line-oriented so a snapshot of a full 256 MiB store is written and read as a stream, never as one huge string.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { writeFileAtomic } from './atomic-file.js';
import { sha256Hex } from './body.js';
import { InvalidArgumentError } from './errors.js';
import type { ObjectInfo, VersionInfo } from './types.js';

const FORMAT = 'kyozo-ram-snapshot';
const FORMAT_VERSION = 1;

export type SnapshotEntry =
  | { type: 'object'; info: ObjectInfo; content: Buffer }
  | { type: 'version'; info: VersionInfo; contentType: string; metadata: Record<string, string>; content: Buffer };

export async function writeSnapshot(path: string, entries: Iterable<SnapshotEntry>): Promise<void> {
  const lines = (function* () {
    yield `${JSON.stringify({ format: FORMAT, v: FORMAT_VERSION })}\n`;
    for (const entry of entries) yield `${JSON.stringify({ ...entry, content: entry.content.toString('base64') })}\n`;
  })();
  await writeFileAtomic(path, Readable.from(lines), { fsync: true });
}

export async function* readSnapshot(path: string): AsyncGenerator<SnapshotEntry> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  let lineNumber = 0;
  for await (const line of lines) {
    lineNumber++;
    if (lineNumber === 1) {
      const header = JSON.parse(line) as { format?: string; v?: number };
      if (header.format !== FORMAT || header.v !== FORMAT_VERSION) throw new InvalidArgumentError(`${path} is not a ram snapshot`);
      continue;
    }
    if (line === '') continue;
    const raw = JSON.parse(line) as Omit<SnapshotEntry, 'content'> & { content: string };
    const entry = { ...raw, content: Buffer.from(raw.content, 'base64') } as SnapshotEntry;
    if (sha256Hex(entry.content) !== entry.info.etag) {
      throw new InvalidArgumentError(`snapshot ${path} is corrupt at line ${lineNumber}: content does not match its etag`);
    }
    yield entry;
  }
  if (lineNumber === 0) throw new InvalidArgumentError(`${path} is empty, not a ram snapshot`);
}
