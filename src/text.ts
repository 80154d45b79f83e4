/**
 * Text from bytes that must be UTF-8: throws (`TypeError`) on any byte sequence that is not, instead of replacing it.
 * A leading U+FEFF is text like any other (a key may start with one), not a byte order mark to drop: a list cursor
 * naming such a key read back without it, and paging never ended.
 */
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function decodeUtf8Strict(bytes: Uint8Array): string {
  return strict.decode(bytes);
}
