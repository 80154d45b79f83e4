/**
 * DESIGN §3's dependency rule, over the import graph of src/: "Dependencies point one way: api and workers use jobs,
 * providers, events; jobs uses providers and events; providers use only their own types/keys/errors/resilience.
 * Nothing imports api/ or workers/. ... providers never import events or jobs. No import circles."
 *
 * Type-only imports (`import type`, or every name `type X`) are erased at run time and are not counted. `src/main.ts`
 * (the embedded process, DESIGN §2: web + worker in one process) is the one module allowed to import both halves.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../../src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? sources(full) : entry.name.endsWith('.ts') ? [full] : [];
  });
}

const IMPORT = /^\s*(?:import|export)\s+(type\s+)?([^;]*?)\s*from\s+['"](\.[^'"]+)['"]/gms;
const DYNAMIC = /import\(\s*['"](\.[^'"]+)['"]\s*\)/g;

/** Run-time imports of each module: path relative to src/ -> paths relative to src/. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    const resolve = (spec: string) => path.relative(SRC, path.resolve(path.dirname(file), spec)).replace(/\.js$/, '.ts');
    const targets: string[] = [];
    for (const match of text.matchAll(IMPORT)) {
      const clause = match[2]!;
      const named = /^\{([^}]*)\}$/.exec(clause.trim());
      const typeOnly = match[1] !== undefined || (named !== null && named[1]!.split(',').map((n) => n.trim()).filter(Boolean).every((n) => n.startsWith('type ')));
      if (!typeOnly) targets.push(resolve(match[3]!));
    }
    for (const match of text.matchAll(DYNAMIC)) targets.push(resolve(match[1]!));
    graph.set(path.relative(SRC, file), targets);
  }
  return graph;
}

const area = (module: string) => (module.includes('/') ? module.split('/')[0]! : module);

describe('DESIGN §3 dependency rule', () => {
  const graph = importGraph();
  const edges = [...graph].flatMap(([from, targets]) => targets.map((to) => ({ from, to })));

  it('nothing outside api/ imports api/, nothing outside workers/ imports workers/ (but the embedded src/main.ts)', () => {
    const offending = edges
      .filter(({ from, to }) => from !== 'main.ts' && ((area(to) === 'api' && area(from) !== 'api') || (area(to) === 'workers' && area(from) !== 'workers')))
      .map(({ from, to }) => `${from} -> ${to}`);
    expect(offending).toEqual([]);
  });

  it('providers never import events/ or jobs/; jobs/ never imports api/ or workers/', () => {
    const offending = edges
      .filter(({ from, to }) => (area(from) === 'providers' && ['events', 'jobs'].includes(area(to))) || (area(from) === 'jobs' && ['api', 'workers'].includes(area(to))))
      .map(({ from, to }) => `${from} -> ${to}`);
    expect(offending).toEqual([]);
  });

  it('no import circles', () => {
    // Tarjan's strongly connected components: any with more than one module is a circle.
    let next = 0;
    const index = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const onStack = new Set<string>();
    const circles: string[][] = [];
    const visit = (v: string) => {
      index.set(v, next);
      low.set(v, next++);
      stack.push(v);
      onStack.add(v);
      for (const w of graph.get(v) ?? []) {
        if (!graph.has(w)) continue;
        if (!index.has(w)) {
          visit(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
      if (low.get(v) === index.get(v)) {
        const component: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          component.push(w);
        } while (w !== v);
        if (component.length > 1) circles.push(component.sort());
      }
    };
    for (const v of graph.keys()) if (!index.has(v)) visit(v);
    expect(circles).toEqual([]);
  });
});
