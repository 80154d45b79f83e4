/**
 * The disk provider's record file, shared by current objects and versions: the raw content, then a UTF-8 JSON
 * trailer describing it, then the trailer's length (4 bytes, big-endian) and the magic `KYZ1`.
 *
 * One file rather than content + sidecar: a sidecar makes every write two atomic renames (a crash between them
 * tears content from its etag) and two fsyncs. The metadata is a trailer, not a header, because the etag is
 * known only once the content has streamed through the hash.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { pipeline, Readable } from 'node:stream';
import { nowIso } from '../clock.js';
import { stageFile, type AtomicWriteOptions, type StagedFile } from './atomic-file.js';
import { HashingStream, isReadable, resolveRange, sha256Hex, toReadable } from './body.js';
import { DataCorruptedError } from './errors.js';
import type { Author, Body, ByteRange, ObjectInfo } from './types.js';

const MAGIC = Buffer.from('KYZ1', 'latin1');
const FOOTER_BYTES = 8;
/** Trailers are small (metadata is capped at 2 KiB): one read of this much finds a whole one almost always. */
const TRAILER_READ_BYTES = 4096;
/** Records up to this size are read whole in one read when their content is wanted, and served from memory. */
const WHOLE_READ_BYTES = 64 * 1024;

/** The trailer: an ObjectInfo without its key (the path is the key), plus a version's message and author. */
export interface RecordTrailer extends Omit<ObjectInfo, 'key'> {
  v: 1;
  message?: string;
  author?: Author;
}

/** What the writer says about a record; size, etag and time are the record's own. */
export type RecordDescription = Omit<RecordTrailer, 'v' | 'size' | 'etag' | 'updatedAt'>;

function encodeTrailer(description: RecordDescription, size: number, etag: string): { trailer: RecordTrailer; bytes: Buffer } {
  const trailer: RecordTrailer = { v: 1, size, etag, ...description, updatedAt: nowIso() };
  const json = Buffer.from(JSON.stringify(trailer), 'utf8');
  const footer = Buffer.alloc(FOOTER_BYTES);
  footer.writeUInt32BE(json.length, 0);
  MAGIC.copy(footer, 4);
  return { trailer, bytes: Buffer.concat([json, footer]) };
}

/** A record written to a temp file next to its target, for the caller to publish or discard (atomic-file.ts). */
export interface StagedRecord {
  trailer: RecordTrailer;
  file: StagedFile;
}

/**
 * The body given to `stageRecord` failed while it was read (the sender went away): `cause` is the body's own error,
 * which is the caller's to see as it is, not a failure of the store.
 */
export class BodyError extends Error {
  constructor(cause: unknown) {
    super('the body failed while it was read', { cause });
  }
}

/** Stages content + trailer for `target`; a stream body is hashed on its way to the file, never buffered. */
export async function stageRecord(
  target: string,
  body: Body,
  description: RecordDescription,
  options: AtomicWriteOptions,
): Promise<StagedRecord> {
  if (!isReadable(body)) {
    const content = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    const { trailer, bytes } = encodeTrailer(description, content.length, sha256Hex(content));
    // One write call for small bodies: the trailer rides along with the content.
    return { trailer, file: await stageFile(target, Buffer.concat([content, bytes]), options) };
  }
  const hashing = new HashingStream();
  // Errors of either stream destroy both; the loop below then throws the error as the body's.
  pipeline(toReadable(body), hashing, () => {});
  let written: RecordTrailer | undefined;
  const record = (async function* () {
    try {
      for await (const chunk of hashing) yield chunk as Buffer;
    } catch (error) {
      throw new BodyError(error);
    }
    const { trailer, bytes } = encodeTrailer(description, hashing.size, hashing.etag);
    written = trailer;
    yield bytes;
  })();
  try {
    const file = await stageFile(target, record, options);
    return { trailer: written!, file };
  } catch (error) {
    hashing.destroy();
    throw error;
  }
}

/**
 * A record file that is there but cannot be read as one (cut short by a crash without fsync, or overwritten). The
 * message names no path (clients see it): the disk provider says which key (`why` is for its message).
 */
export class DamagedRecordError extends DataCorruptedError {
  constructor(
    readonly why: string,
    options?: { cause?: unknown },
  ) {
    super(`a stored record is damaged: ${why}`, options);
  }
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await file.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled === length ? buffer : buffer.subarray(0, filled);
}

/** Reads the trailer from an open record; `content` is the whole content when the read covered the file. */
async function loadTrailer(file: FileHandle, readBytes: number): Promise<{ trailer: RecordTrailer; content?: Buffer }> {
  const { size: fileSize } = await file.stat();
  if (fileSize < FOOTER_BYTES) throw new DamagedRecordError('it is too short');
  let tail = await readAt(file, fileSize - Math.min(fileSize, readBytes), Math.min(fileSize, readBytes));
  const footer = tail.subarray(tail.length - FOOTER_BYTES);
  if (tail.length < FOOTER_BYTES || !footer.subarray(4).equals(MAGIC)) throw new DamagedRecordError('it has no trailer');
  const recordTail = footer.readUInt32BE(0) + FOOTER_BYTES;
  if (recordTail > fileSize) throw new DamagedRecordError('its trailer is longer than the file');
  if (recordTail > tail.length) tail = await readAt(file, fileSize - recordTail, recordTail);
  let trailer: RecordTrailer;
  try {
    trailer = JSON.parse(tail.subarray(tail.length - recordTail, tail.length - FOOTER_BYTES).toString('utf8')) as RecordTrailer;
  } catch (error) {
    throw new DamagedRecordError('its trailer is not JSON', { cause: error });
  }
  if (trailer.v !== 1 || trailer.size !== fileSize - recordTail || typeof trailer.etag !== 'string') {
    throw new DamagedRecordError('its trailer does not describe the file');
  }
  return { trailer, content: tail.length === fileSize ? tail.subarray(0, trailer.size) : undefined };
}

// O_NOFOLLOW: a symlink planted where a record should be is refused (ELOOP), not followed out of the store.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW;

export async function readTrailer(path: string): Promise<RecordTrailer> {
  const file = await open(path, OPEN_FLAGS);
  try {
    return (await loadTrailer(file, TRAILER_READ_BYTES)).trailer;
  } finally {
    await file.close();
  }
}

/**
 * Opens a record for reading: its trailer and its content (or the inclusive `range` of it) as a stream. The open
 * file, not the path, is read, so a concurrent replacement of the record cannot mix two contents.
 */
export async function readRecord(path: string, range?: ByteRange): Promise<{ trailer: RecordTrailer; body: Readable }> {
  const file = await open(path, OPEN_FLAGS);
  let handedOver = false;
  try {
    const { trailer, content } = await loadTrailer(file, WHOLE_READ_BYTES);
    // Checked only where the content is in memory anyway: a streamed one is sent before its last byte is hashed.
    if (content !== undefined && sha256Hex(content) !== trailer.etag) throw new DamagedRecordError('its content does not match its etag');
    const [start, end] = range ? resolveRange(range, trailer.size) : [0, trailer.size - 1];
    if (content !== undefined || trailer.size === 0) {
      const slice = content?.subarray(start, end + 1);
      return { trailer, body: Readable.from(slice && slice.length > 0 ? [slice] : [], { objectMode: false }) };
    }
    handedOver = true;
    return { trailer, body: file.createReadStream({ start, end }) };
  } finally {
    if (!handedOver) await file.close();
  }
}
