// Builds the JavaScript step plugins (componentize-js: SpiderMonkey, no AOT)
// and the WAT guest (wasm-tools from jco) into components. Skips outputs
// newer than their sources. Usage: node build.mjs <output directory>
import { componentize } from '@bytecodealliance/componentize-js';
import { parse, componentEmbed, componentNew } from '@bytecodealliance/jco';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wit = join(here, '../../wit');
const out = process.argv[2] ?? join(here, '../../build/plugins');

// plugin name -> source, world (the smallest that has what the step imports)
const steps = {
  'js-reserve-inventory': { source: 'steps/reserve-inventory.js', world: 'step-services' },
  'js-cart-total': { source: 'steps/cart-total.js', world: 'step-log' },
};

async function mtime(path) {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return 0;
  }
}

async function upToDate(output, inputs) {
  const built = await mtime(output);
  for (const input of inputs) {
    if ((await mtime(input)) >= built) return false;
  }
  return true;
}

await mkdir(out, { recursive: true });
const witFile = join(wit, 'step.wit');
for (const [name, { source, world }] of Object.entries(steps)) {
  const output = join(out, `${name}.wasm`);
  const manifest = join(here, 'steps', `${name}.toml`);
  if ((await mtime(manifest)) > 0) await copyFile(manifest, join(out, `${name}.toml`));
  if (await upToDate(output, [join(here, source), witFile, join(here, 'package-lock.json')])) continue;
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: join(here, source),
    witPath: wit,
    worldName: world,
    // No WASI imports the steps do not use (stdio would also hide a trap's
    // stderr, so it stays enabled: the host captures it).
    disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
  });
  await writeFile(output, component);
  console.error(`built ${name} (${component.length} bytes) in ${Date.now() - started} ms`);
}

// The WAT guest: the raw contract, embedded and wrapped by wasm-tools.
const watSource = join(here, '../wat/echo.wat');
const watOutput = join(out, 'wat-echo.wasm');
if (!(await upToDate(watOutput, [watSource, witFile]))) {
  const core = await parse(await readFile(watSource, 'utf8'));
  const embedded = await componentEmbed({ binary: core, witSource: await readFile(witFile, 'utf8'), world: 'step-log' });
  await writeFile(watOutput, await componentNew(embedded));
  console.error('built wat-echo');
}
