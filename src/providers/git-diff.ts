/**
 * Unified diffs of text content, in the format `git apply` and `patch` accept: Myers' O(ND) line diff with three
 * lines of context, `\ No newline at end of file` where it applies. Content is text when it is valid UTF-8 and has
 * no NUL in its first 8,000 bytes (git's own test); anything else gets a "binary" answer instead of a patch.
 *
 * Myers keeps O(D²) of trace; past `MAX_EDITS` differing lines the middle of the files is given as one deletion
 * plus one insertion: still a correct patch, just not a minimal one.
 */
import { decodeUtf8Strict } from '../text.js';

const MAX_EDITS = 2000;
const CONTEXT = 3;
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
  lines: string[];
  /** The last line has no newline after it. */
  noEol: boolean;
}

function splitLines(text: string): Lines {
  if (text === '') return { lines: [], noEol: false };
  const lines = text.split('\n');
  const noEol = lines.at(-1) !== '';
  if (!noEol) lines.pop();
  return { lines, noEol };
}

type Op = '=' | '-' | '+';

/** The edit script from `a` to `b`, or undefined when it needs more than `maxEdits` edits. */
function myers(a: readonly string[], b: readonly string[], maxEdits: number): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  const limit = Math.min(n + m, maxEdits);
  const offset = limit + 1;
  const v = new Int32Array(2 * limit + 3);
  const trace: Int32Array[] = [];
  for (let d = 0; d <= limit; d++) {
    trace.push(v.slice(offset - d - 1, offset + d + 2));
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[offset + k - 1]! < v[offset + k + 1]!) ? v[offset + k + 1]! : v[offset + k - 1]! + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
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

function editScript(a: readonly string[], b: readonly string[]): Op[] {
  let prefix = 0;
  while (prefix < a.length && prefix < b.length && a[prefix] === b[prefix]) prefix++;
  let suffix = 0;
  while (suffix < a.length - prefix && suffix < b.length - prefix && a[a.length - 1 - suffix] === b[b.length - 1 - suffix]) suffix++;
  const middleA = a.slice(prefix, a.length - suffix);
  const middleB = b.slice(prefix, b.length - suffix);
  const middle = myers(middleA, middleB, MAX_EDITS) ?? [...middleA.map((): Op => '-'), ...middleB.map((): Op => '+')];
  return [...new Array<Op>(prefix).fill('='), ...middle, ...new Array<Op>(suffix).fill('=')];
}

export interface UnifiedDiff {
  patch: string;
  additions: number;
  deletions: number;
}

/**
 * `before`/`after` null means the file does not exist on that side (`/dev/null`). Identical texts give an empty
 * patch.
 */
export function unifiedDiff(before: string | null, after: string | null, name: string): UnifiedDiff {
  const a = splitLines(before ?? '');
  const b = splitLines(after ?? '');
  // A last line without its newline is a different line from the same text with one, as in git.
  const marked = (side: Lines) => side.lines.map((line, i) => (side.noEol && i === side.lines.length - 1 ? `${line}\u0000` : line));
  const ops = editScript(marked(a), marked(b));

  let additions = 0;
  let deletions = 0;
  const body: string[] = [];
  // Positions before each op, in both files.
  const oldAt: number[] = [];
  const newAt: number[] = [];
  let i = 0;
  let j = 0;
  for (const op of ops) {
    oldAt.push(i);
    newAt.push(j);
    if (op !== '+') i++;
    if (op !== '-') j++;
  }
  const changed = ops.flatMap((op, index) => (op === '=' ? [] : [index]));
  let next = 0;
  while (next < changed.length) {
    const start = Math.max(0, changed[next]! - CONTEXT);
    let end = changed[next]! + 1;
    while (next < changed.length && changed[next]! <= end + 2 * CONTEXT - 1) {
      end = changed[next]! + 1;
      next++;
    }
    end = Math.min(ops.length, end + CONTEXT);
    const lines: string[] = [];
    let oldCount = 0;
    let newCount = 0;
    for (let index = start; index < end; index++) {
      const op = ops[index]!;
      const oldIndex = oldAt[index]!;
      const newIndex = newAt[index]!;
      const text = op === '+' ? b.lines[newIndex]! : a.lines[oldIndex]!;
      const missingEol = op === '+' ? b.noEol && newIndex === b.lines.length - 1 : a.noEol && oldIndex === a.lines.length - 1;
      lines.push(`${op === '=' ? ' ' : op}${text}`);
      if (missingEol) lines.push(NO_EOL);
      if (op !== '+') oldCount++;
      if (op !== '-') newCount++;
      if (op === '+') additions++;
      if (op === '-') deletions++;
    }
    const oldStart = oldCount === 0 ? oldAt[start]! : oldAt[start]! + 1;
    const newStart = newCount === 0 ? newAt[start]! : newAt[start]! + 1;
    body.push(`@@ -${oldStart},${oldCount} +${newStart},${newCount} @@`);
    for (const line of lines) body.push(line); // not push(...lines): a hunk of 100,000s of lines overflows the stack
  }
  if (body.length === 0) return { patch: '', additions: 0, deletions: 0 };
  const header = [before === null ? '--- /dev/null' : `--- a/${name}`, after === null ? '+++ /dev/null' : `+++ b/${name}`];
  return { patch: `${header.join('\n')}\n${body.join('\n')}\n`, additions, deletions };
}
