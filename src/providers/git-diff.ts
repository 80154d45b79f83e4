/**
 * Unified diffs of text content, in the format `git apply` and `patch` accept: Myers' O(ND) line diff with three
 * lines of context, `\ No newline at end of file` where it applies. Content is text when it is valid UTF-8 and has
 * no NUL in its first 8,000 bytes (git's own test); anything else gets a "binary" answer instead of a patch.
 *
 * Myers keeps O(D²) of trace; past `MAX_EDITS` differing lines the middle of the files is given as one deletion
 * plus one insertion: still a correct patch, just not a minimal one.
 */
import { decodeUtf8Strict } from '../text.js';
import { PayloadTooLargeError } from './errors.js';

const MAX_EDITS = 2000;
/**
 * Diagonals tried and lines compared along them. Repeated lines (a file of `x`s, blank lines) make long matches on
 * every diagonal, so the work grows with the lines times the edits, not only the edits squared: past this the
 * middle is given whole, as past `MAX_EDITS`.
 */
const MAX_WORK = 10_000_000;
const CONTEXT = 3;
/**
 * A diff runs on the web process's event loop, in time that grows with the lines (~150-250 ms here for 100,000
 * with 2,000 or more changed, the slowest shapes measured; a 32 MB text held it for 7 s): larger content is refused
 * rather than hold every other request. Bytes are checked before the content is decoded, lines after.
 */
export const DIFF_MAX_BYTES = 16 * 1024 * 1024;
const DIFF_MAX_LINES = 100_000;
const NO_EOL = '\\ No newline at end of file';

export function isBinary(bytes: Uint8Array): boolean {
  if (bytes.subarray(0, 8000).includes(0)) return true;
  try {
    decodeUtf8Strict(bytes);
    return false;
  } catch {
    return true;
  }
}

interface Lines {
  /** A last line without its newline ends in NUL here: it differs from the same text with one, as in git. */
  lines: string[];
  /** The last line has no newline after it. */
  noEol: boolean;
}

function splitLines(text: string): Lines {
  if (text === '') return { lines: [], noEol: false };
  const lines = text.split('\n');
  const noEol = lines.at(-1) !== '';
  if (noEol) lines[lines.length - 1] += '\u0000';
  else lines.pop();
  return { lines, noEol };
}

type Op = '=' | '-' | '+';

/** The edit script from `a` to `b`, or undefined when it needs more than `maxEdits` edits or `maxWork` steps. */
function myers(a: readonly string[], b: readonly string[], maxEdits: number, maxWork: number): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  const limit = Math.min(n + m, maxEdits);
  const offset = limit + 1;
  const v = new Int32Array(2 * limit + 3);
  const trace: Int32Array[] = [];
  let work = 0;
  for (let d = 0; d <= limit; d++) {
    trace.push(v.slice(offset - d - 1, offset + d + 2));
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[offset + k - 1]! < v[offset + k + 1]!) ? v[offset + k + 1]! : v[offset + k - 1]! + 1;
      let y = x - k;
      const from = x;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      work += 1 + x - from;
      if (work > maxWork) return undefined;
      v[offset + k] = x;
      if (x >= n && y >= m) return backtrack(trace, n, m);
    }
  }
  return undefined;
}

function backtrack(trace: Int32Array[], n: number, m: number): Op[] {
  const ops: Op[] = [];
  let x = n;
  let y = m;
  for (let d = trace.length - 1; d >= 0; d--) {
    const v = trace[d]!;
    const at = (k: number) => v[k + d + 1]!;
    const k = x - y;
    const previousK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
    const previousX = at(previousK);
    const previousY = previousX - previousK;
    while (x > previousX && y > previousY) {
      ops.push('=');
      x--;
      y--;
    }
    if (d > 0) ops.push(x === previousX ? '+' : '-');
    x = previousX;
    y = previousY;
  }
  return ops.reverse();
}

/**
 * The edit script from `a` to `b`: the lines both start and end with are counted, not listed (a small change in a
 * large file costs little beyond finding them), and the middle between them is diffed.
 */
interface EditScript {
  prefix: number;
  middle: Op[];
  suffix: number;
}

function editScript(a: readonly string[], b: readonly string[]): EditScript {
  let prefix = 0;
  while (prefix < a.length && prefix < b.length && a[prefix] === b[prefix]) prefix++;
  let suffix = 0;
  while (suffix < a.length - prefix && suffix < b.length - prefix && a[a.length - 1 - suffix] === b[b.length - 1 - suffix]) suffix++;
  const middleA = a.slice(prefix, a.length - suffix);
  const middleB = b.slice(prefix, b.length - suffix);
  const middle = myers(middleA, middleB, MAX_EDITS, MAX_WORK) ?? [...middleA.map((): Op => '-'), ...middleB.map((): Op => '+')];
  return { prefix, middle, suffix };
}

export interface UnifiedDiff {
  patch: string;
  additions: number;
  deletions: number;
}

/**
 * `before`/`after` null means the file does not exist on that side (`/dev/null`). Identical texts give an empty
 * patch. An empty file made or deleted has no lines to show: it is git's extended header alone, which `git apply`
 * takes (a plain `---`/`+++` pair without a hunk is no patch to it).
 */
export function unifiedDiff(before: string | null, after: string | null, name: string): UnifiedDiff {
  const a = splitLines(before ?? '');
  const b = splitLines(after ?? '');
  const lines = Math.max(a.lines.length, b.lines.length);
  if (lines > DIFF_MAX_LINES) throw tooLargeToDiff(name, `${lines.toLocaleString('en')} lines`);
  const { prefix, middle, suffix } = editScript(a.lines, b.lines);
  const total = prefix + middle.length + suffix;
  const middleEnd = prefix + middle.length;
  // Positions before each op of the middle, in both files, from its start.
  const middleOld = new Int32Array(middle.length + 1);
  const middleNew = new Int32Array(middle.length + 1);
  for (let t = 0; t < middle.length; t++) {
    middleOld[t + 1] = middleOld[t]! + (middle[t] === '+' ? 0 : 1);
    middleNew[t + 1] = middleNew[t]! + (middle[t] === '-' ? 0 : 1);
  }
  const opAt = (t: number): Op => (t < prefix || t >= middleEnd ? '=' : middle[t - prefix]!);
  const oldAt = (t: number) => (t <= prefix ? t : t >= middleEnd ? a.lines.length - (total - t) : prefix + middleOld[t - prefix]!);
  const newAt = (t: number) => (t <= prefix ? t : t >= middleEnd ? b.lines.length - (total - t) : prefix + middleNew[t - prefix]!);

  let additions = 0;
  let deletions = 0;
  const body: string[] = [];
  const changed: number[] = [];
  for (let t = 0; t < middle.length; t++) if (middle[t] !== '=') changed.push(prefix + t);
  let next = 0;
  while (next < changed.length) {
    const start = Math.max(0, changed[next]! - CONTEXT);
    let end = changed[next]! + 1;
    while (next < changed.length && changed[next]! <= end + 2 * CONTEXT - 1) {
      end = changed[next]! + 1;
      next++;
    }
    end = Math.min(total, end + CONTEXT);
    const lines: string[] = [];
    let oldCount = 0;
    let newCount = 0;
    for (let t = start; t < end; t++) {
      const op = opAt(t);
      const side = op === '+' ? b : a;
      const index = op === '+' ? newAt(t) : oldAt(t);
      const missingEol = side.noEol && index === side.lines.length - 1;
      const line = side.lines[index]!;
      lines.push(`${op === '=' ? ' ' : op}${missingEol ? line.slice(0, -1) : line}`);
      if (missingEol) lines.push(NO_EOL);
      if (op !== '+') oldCount++;
      if (op !== '-') newCount++;
      if (op === '+') additions++;
      if (op === '-') deletions++;
    }
    const oldStart = oldCount === 0 ? oldAt(start) : oldAt(start) + 1;
    const newStart = newCount === 0 ? newAt(start) : newAt(start) + 1;
    body.push(`@@ -${oldStart},${oldCount} +${newStart},${newCount} @@`);
    for (const line of lines) body.push(line); // not push(...lines): a hunk of 100,000s of lines overflows the stack
  }
  if (body.length === 0) {
    const made = before === null ? 'new' : after === null ? 'deleted' : undefined;
    return { patch: made === undefined ? '' : `diff --git ${gitHeaderPath('a', name)} ${gitHeaderPath('b', name)}\n${made} file mode 100644\n`, additions: 0, deletions: 0 };
  }
  const header = [before === null ? '--- /dev/null' : `--- a/${name}`, after === null ? '+++ /dev/null' : `+++ b/${name}`];
  return { patch: `${header.join('\n')}\n${body.join('\n')}\n`, additions, deletions };
}

/**
 * A path in a `diff --git` line, quoted as git quotes one holding `"` (keys hold no backslash or control character,
 * the other characters git quotes; text outside ASCII `git apply` takes as it is).
 */
function gitHeaderPath(side: 'a' | 'b', name: string): string {
  return name.includes('"') ? `"${side}/${name.replaceAll('"', '\\"')}"` : `${side}/${name}`;
}

/** A diff refused for its size: 413, saying what to do instead. */
export function tooLargeToDiff(name: string, size: string): PayloadTooLargeError {
  return new PayloadTooLargeError(
    `"${name}" is too large to diff here (${size}; at most ${DIFF_MAX_LINES.toLocaleString('en')} lines and ${DIFF_MAX_BYTES / 1024 / 1024} MiB a side): read both versions and diff them locally`,
  );
}
