// Builds the JavaScript and TypeScript step plugins (written with
// @stepwise/sdk, see sdk/build.mjs: Stepwise's QuickJS runtime, SpiderMonkey
// where asked for) and the WAT guest (wasm-tools from jco) into components.
// Skips outputs newer than their sources. The QuickJS runtime modules
// (sdk/runtime, runtime/build.sh) and the `stepwise` binary ($STEPWISE) must
// be built first (scripts/build-guests.sh does both).
// Usage: node build.mjs <output directory>
import { buildStep } from '@stepwise/sdk/build';
import { parse, componentEmbed, componentNew } from '@bytecodealliance/jco';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wit = join(here, '../../wit');
const out = process.argv[2] ?? join(here, '../../build/plugins');

// plugin name -> source (the world follows the grants of steps/<name>.toml)
const steps = {
  'js-reserve-inventory': 'steps/reserve-inventory.js',
  'js-cart-total': 'steps/cart-total.js',
  'js-gift-wrap': 'steps/gift-wrap.ts',
  'js-probe': 'steps/probe.js',
  // The same cart total on SpiderMonkey: the benchmark's baseline for QuickJS.
  'js-cart-total-spidermonkey': { source: 'steps/cart-total.js', runtime: 'spidermonkey', manifest: 'js-cart-total' },
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

// TypeScript steps are type-checked (tsc, against the SDK's types) before
// rolldown strips their types; once per build.
let typeChecked = false;
function typeCheck() {
  if (typeChecked) return;
  const tsc = spawnSync(join(here, 'node_modules/.bin/tsc'), ['-p', here], { encoding: 'utf8' });
  if (tsc.status !== 0) {
    console.error(`${tsc.stdout}${tsc.stderr}`);
    throw new Error('the TypeScript steps do not type-check (tsc -p guest-examples/js)');
  }
  typeChecked = true;
}

await mkdir(out, { recursive: true });
const witFile = join(wit, 'step.wit');
// The SDK and the QuickJS runtime modules: a change to either rebuilds the steps.
const filesIn = async (dir) =>
  (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isFile()).map((entry) => join(dir, entry.name));
const sdkFiles = [...(await filesIn(join(here, 'sdk'))), ...(await filesIn(join(here, 'sdk', 'runtime')))];
for (const [name, entry] of Object.entries(steps)) {
  const { source, runtime = 'auto', manifest: manifestOf = name } = typeof entry === 'string' ? { source: entry } : entry;
  const output = join(out, `${name}.wasm`);
  const manifest = join(here, 'steps', `${manifestOf}.toml`);
  const hasManifest = (await mtime(manifest)) > 0;
  if (hasManifest) {
    // The manifest's name is the plugin's.
    const text = (await readFile(manifest, 'utf8')).replace(/^name = ".*"$/m, `name = "${name}"`);
    await writeFile(join(out, `${name}.toml`), text);
  }
  const inputs = [join(here, source), witFile, join(here, 'package-lock.json'), ...sdkFiles, ...(hasManifest ? [manifest] : [])];
  if (await upToDate(output, inputs)) continue;
  if (source.endsWith('.ts')) typeCheck();
  const built = await buildStep({ source: join(here, source), output, wit, runtime, manifest: hasManifest ? manifest : undefined });
  console.error(`built ${name} (${built.runtime}, ${built.world}, ${built.bytes} bytes) in ${built.ms} ms`);
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
