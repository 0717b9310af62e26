// Builds a step written with @stepwise/sdk (JavaScript or TypeScript) into a
// Stepwise component:
//   1. rolldown bundles the step file and what it imports into one module
//      (TypeScript is stripped by rolldown; `tsc --noEmit` checks types);
//   2. an entry module binds it (`bindStep`) to the host imports of `world`;
//   3. a JavaScript engine is embedded: QuickJS (componentize-qjs, ~1.6 MB,
//      fast to compile and call) for sync steps, SpiderMonkey
//      (componentize-js, ~12 MB) for `async` ones: QuickJS's non-async
//      runtime cannot wait for a promise inside a call.
import { rolldown } from 'rolldown';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), 'index.js');

/** The host interfaces each world imports (they are bound to the step). */
const WORLDS = {
  'skippable-step-log': ['log'],
  'skippable-step-services': ['log', 'services'],
  'skippable-step-kv': ['log', 'config', 'kv'],
  'skippable-step': ['log', 'config', 'kv', 'services'],
};

/**
 * @param {object} options
 * @param {string} options.source the step file (`export default createStep(...)`)
 * @param {string} options.output the component to write
 * @param {string} options.wit the WIT directory (stepwise:step@0.1.0)
 * @param {string} [options.manifest] the plugin's manifest: the world follows its grants
 * @param {string} [options.world] one of WORLDS (default: from the manifest, else `skippable-step-log`)
 * @param {'auto'|'quickjs'|'spidermonkey'} [options.runtime] (default: `auto`)
 * @returns {Promise<{runtime: string, world: string, bytes: number, ms: number}>}
 */
export async function buildStep({ source, output, wit, manifest, world, runtime = 'auto', quickjsTuning }) {
  const started = Date.now();
  world ??= manifest ? worldFor(await readFile(manifest, 'utf8'), manifest) : 'skippable-step-log';
  const imports = WORLDS[world];
  if (!imports) throw new Error(`${source}: unknown world \`${world}\` (one of ${Object.keys(WORLDS).join(', ')})`);
  if (!['auto', 'quickjs', 'spidermonkey'].includes(runtime)) {
    throw new Error(`${source}: unknown runtime \`${runtime}\` (auto, quickjs or spidermonkey)`);
  }
  const work = join(dirname(output), `.build-${basename(output, '.wasm')}`);
  await mkdir(work, { recursive: true });
  try {
    const step = await bundle(resolve(source));
    if (runtime === 'auto') runtime = (await isAsyncStep(step, work)) ? 'spidermonkey' : 'quickjs';
    const entry = await bundle(ENTRY, entryModule(resolve(source), imports, runtime));
    const entryPath = join(work, 'entry.js');
    await writeFile(entryPath, entry);
    const component = runtime === 'quickjs' ? await quickjs(entryPath, entry, wit, world, quickjsTuning) : await spidermonkey(entryPath, wit, world);
    await writeFile(output, component);
    return { runtime, world, bytes: component.length, ms: Date.now() - started };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * The smallest world whose imports a manifest grants: `services` for
 * `container`, `kv` and `config` (granted together) for `config.get`.
 */
export function worldFor(manifestText, path = 'the manifest') {
  const capabilities = (manifestText.split(/^\s*\[capabilities\]\s*$/m)[1] ?? '').split(/^\s*\[/m)[0];
  const granted = (key, value) => new RegExp(`^\\s*${key}\\s*=\\s*${value}`, 'm').test(capabilities);
  const services = granted('services', '\\[\\s*"');
  const kv = granted('kv', 'true');
  const config = granted('config', 'true');
  if (kv !== config) {
    throw new Error(`${path}: grant both \`kv\` and \`config\` or neither (a JavaScript step's world imports them together)`);
  }
  if (services && kv) return 'skippable-step';
  if (services) return 'skippable-step-services';
  return kv ? 'skippable-step-kv' : 'skippable-step-log';
}

const ENTRY = '\0stepwise-entry';

function entryModule(source, imports, runtime) {
  const lines = [
    `import { bindStep } from ${JSON.stringify(sdk)};`,
    `import step from ${JSON.stringify(source)};`,
    `import { log } from 'stepwise:step/log@0.1.0';`,
  ];
  const host = ['log'];
  if (imports.includes('services')) {
    lines.push(`import { call } from 'stepwise:step/services@0.1.0';`);
    host.push('call');
  }
  if (imports.includes('config')) {
    lines.push(`import { get as configGet } from 'stepwise:step/config@0.1.0';`);
    host.push('configGet');
  }
  lines.push(
    `const bound = bindStep(step, { ${host.join(', ')}, runtime: ${JSON.stringify(runtime)} });`,
    'export function invoke(ctx, input) { return bound.invoke(ctx, input); }',
    'export function compensate(ctx, data) { return bound.compensate(ctx, data); }',
  );
  return lines.join('\n');
}

/** One ES module of `input` and what it imports; host interfaces stay imports. */
async function bundle(input, entrySource) {
  const plugins = entrySource === undefined ? [] : [{
    name: 'stepwise-entry',
    resolveId: (id) => (id === ENTRY ? id : null),
    load: (id) => (id === ENTRY ? entrySource : null),
  }];
  const build = await rolldown({ input, plugins, platform: 'neutral', external: [/^stepwise:/, /^wasi:/], logLevel: 'warn' });
  try {
    const { output } = await build.generate({ format: 'esm' });
    return output[0].code;
  } finally {
    await build.close();
  }
}

/** Whether the step's invoke or compensate is `async` (loaded in Node to look). */
async function isAsyncStep(code, work) {
  const path = join(work, 'step.mjs');
  await writeFile(path, code);
  const { default: step } = await import(pathToFileURL(path).href);
  const { isAsync } = await import(pathToFileURL(sdk).href);
  if (!step || typeof step.invoke !== 'function') throw new Error('the step module must `export default createStep(...)`');
  return isAsync(step.invoke) || isAsync(step.compensate);
}

async function quickjs(entryPath, entry, wit, world, tuning = {}) {
  const { componentize } = await import('componentize-qjs');
  const { component } = await componentize({ witPath: wit, jsSource: entry, jsPath: entryPath, world, sync: true, ...tuning });
  return component;
}

async function spidermonkey(entryPath, wit, world) {
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const { component } = await componentize({
    sourcePath: entryPath,
    witPath: wit,
    worldName: world,
    // No WASI imports steps do not use (stdio stays: the host captures it).
    disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
  });
  return component;
}

