// An s3rver in its own process, started by test/support/s3.ts (plain JS: it runs under a Node flag, without tsx).
//
// s3rver 3.7.1 differs from S3 in ways measured here; each is corrected below so that tests hold the provider to
// what real S3 (and MinIO) do, not to the mock's accidents:
// - ListObjectsV2 continuation tokens are encrypted with DES, which Node 20's OpenSSL 3 has only with
//   --openssl-legacy-provider: without it every truncated listing answers 500. The parent passes that flag.
// - Listings come in directory-walk order ('a/b' before 'a-c' before 'a'), not UTF-8 byte order, and are paged
//   in that order, losing keys across pages: `listObjects` is replaced by one that sorts by bytes.
// - PutObject truncates and rewrites the object file in place, and answers before a buffered body is on disk:
//   concurrent writes to one key interleave, and a read right after a write can see a short file. Writes go to
//   a temporary file renamed into place, and mutations are serialized (S3 makes each PUT atomic).
// - A key segment becomes a file name, so segments over 255 bytes (S3 allows 1,024-byte keys) failed with
//   ENAMETOOLONG: long segments are split into several directories on disk, joined again when listed.
//
// Environment: S3RVER_DIR (data directory, kept across restarts), S3RVER_PORT (0 = any free port).
// Sends { port } over IPC once listening; exits on SIGTERM, or removes S3RVER_DIR and exits when the parent goes away.
import { createHash } from 'node:crypto';
import { createWriteStream, readdirSync, rmSync } from 'node:fs';
import { mkdir, readdir, rename, rmdir, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import S3rver from 's3rver';

const require = createRequire(import.meta.url);
const S3Object = require('s3rver/lib/models/object');

const OBJECT_SUFFIX = '._S3rver_object';
const MAX_SEGMENT_BYTES = 200; // + s3rver's longest suffix (._S3rver_metadata.json) stays under 255
const PIECE_END = '\u0001'; // never in a store key (control characters are rejected), so unambiguous

const server = new S3rver({
  address: '127.0.0.1',
  port: Number(process.env.S3RVER_PORT ?? 0),
  silent: true,
  directory: process.env.S3RVER_DIR,
});
const store = server.store;
const FilesystemStore = store.constructor;

function splitSegment(segment) {
  if (Buffer.byteLength(segment, 'utf8') <= MAX_SEGMENT_BYTES) return segment;
  const pieces = [];
  let piece = '';
  for (const char of segment) {
    if (Buffer.byteLength(piece + char, 'utf8') > MAX_SEGMENT_BYTES) {
      pieces.push(piece + PIECE_END);
      piece = '';
    }
    piece += char;
  }
  pieces.push(piece);
  return pieces.join('/');
}
FilesystemStore.encodeKeyPath = (key) => key.split('/').map(splitSegment).join('/');
FilesystemStore.decodeKeyPath = (keyPath) => keyPath.split(`${PIECE_END}/`).join('');

let queue = Promise.resolve();
/** Runs mutations one at a time: s3rver's files for one object (content, md5, metadata) change together. */
function serialized(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

store.listObjects = async function listObjects(bucket, options) {
  const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
  const bucketPath = store.getBucketPath(bucket);
  const after = Buffer.from(startAfter, 'utf8');
  const keys = readdirSync(bucketPath, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith(OBJECT_SUFFIX))
    .map((file) => FilesystemStore.decodeKeyPath(file.split(path.sep).join('/').slice(0, -OBJECT_SUFFIX.length)))
    .filter((key) => key.startsWith(prefix))
    .map((key) => ({ key, bytes: Buffer.from(key, 'utf8') }))
    .filter((entry) => Buffer.compare(entry.bytes, after) > 0)
    .sort((a, b) => Buffer.compare(a.bytes, b.bytes));

  const commonPrefixes = new Set();
  const selected = [];
  let isTruncated = false;
  for (const { key } of keys) {
    if (delimiter) {
      const index = key.slice(prefix.length).indexOf(delimiter);
      if (index !== -1) {
        commonPrefixes.add(key.slice(0, prefix.length + index + delimiter.length));
        continue;
      }
    }
    if (selected.length === maxKeys) {
      isTruncated = true;
      break;
    }
    selected.push(key);
  }
  const objects = [];
  for (const key of selected) {
    const metadata = await store.getMetadata(bucket, key).catch((error) => (error.code === 'ENOENT' ? undefined : Promise.reject(error)));
    if (metadata !== undefined) objects.push(new S3Object(bucket, key, null, metadata));
  }
  return { objects, commonPrefixes: [...commonPrefixes].sort(), isTruncated };
};

let temporary = 0;
store.putObject = (object) =>
  serialized(async () => {
    const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
    await mkdir(path.dirname(objectPath), { recursive: true });
    const partial = `${objectPath}.${temporary++}.partial`;
    const md5 = createHash('md5');
    let size = 0;
    if (Buffer.isBuffer(object.content)) {
      md5.update(object.content);
      size = object.content.length;
      await writeFile(partial, object.content);
    } else {
      const measure = new Transform({
        transform(chunk, _encoding, callback) {
          md5.update(chunk);
          size += chunk.length;
          callback(null, chunk);
        },
      });
      await pipeline(object.content, measure, createWriteStream(partial));
    }
    const digest = md5.digest('hex');
    await rename(partial, objectPath);
    await store.putMetadata(object.bucket, object.key, object.metadata, digest);
    return { size, md5: digest };
  });

const copyObject = store.copyObject.bind(store);
store.copyObject = (...args) => serialized(() => copyObject(...args));

store.deleteObject = (bucket, key) =>
  serialized(async () => {
    for (const resource of ['object', 'object.md5', 'metadata.json']) {
      await unlink(store.getResourcePath(bucket, key, resource)).catch((error) => (error.code === 'ENOENT' ? undefined : Promise.reject(error)));
    }
    const bucketPath = store.getBucketPath(bucket);
    const parts = FilesystemStore.encodeKeyPath(key).split('/');
    parts.pop();
    while (parts.length > 0) {
      const dir = path.join(bucketPath, ...parts);
      const entries = await readdir(dir).catch(() => ['(gone or unreadable)']);
      if (entries.length > 0) break;
      await rmdir(dir).catch(() => undefined);
      parts.pop();
    }
  });

const { port } = await server.run();
process.send?.({ port });

const stop = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
// The parent went away (a test worker ends without running exit handlers): the temp data goes with it.
process.on('disconnect', () => {
  if (process.env.S3RVER_DIR) rmSync(process.env.S3RVER_DIR, { recursive: true, force: true });
  stop();
});
