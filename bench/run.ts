/**
 * `npm run bench` runs every suite; `npm run bench -- providers pipeline` runs the ones named. Each suite prints
 * its table and writes bench/results/<suite>.json.
 */
import { formatTable, writeResult, type BenchResult } from './report.js';

const suites: Record<string, () => Promise<BenchResult[]>> = {
  providers: async () => (await import('./providers.js')).runProvidersBench(),
  pipeline: async () => [await (await import('./pipeline.js')).runPipelineBench()],
  hybrid: async () => [await (await import('./hybrid.js')).runHybridBench()],
  api: async () => [await (await import('./api.js')).runApiBench()],
  growth: async () => (await import('./growth.js')).runGrowthBench(),
  scale: async () => [await (await import('./scale.js')).runScaleBench()],
};

const requested = process.argv.slice(2).filter((arg) => arg !== '--');
const unknown = requested.filter((name) => !(name in suites));
if (unknown.length > 0) {
  console.error(`unknown suite(s): ${unknown.join(', ')}; known: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}

let failed = false;
for (const name of requested.length > 0 ? requested : Object.keys(suites)) {
  const started = Date.now();
  for (const result of await suites[name]!()) {
    console.log(`\n${formatTable(result)}`);
    console.log(`(${((Date.now() - started) / 1000).toFixed(1)} s, written to ${await writeResult(result)})`);
    if (result.rows.some((row) => row.pass === false)) failed = true;
  }
}
process.exitCode = failed ? 1 : 0;
