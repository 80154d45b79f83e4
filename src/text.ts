/** Text from bytes that must be UTF-8: throws (`TypeError`) on any byte sequence that is not, instead of replacing it. */
const strict = new TextDecoder('utf-8', { fatal: true });

export function decodeUtf8Strict(bytes: Uint8Array): string {
  return strict.decode(bytes);
}
