// Builds a step written with @stepwise/sdk (JavaScript or TypeScript) into a
// Stepwise component:
//   1. rolldown bundles the step file and what it imports into one module
//      (TypeScript is stripped by rolldown; `tsc --noEmit` checks types);
//   2. an entry binds it (`bindStep`) to the host imports of `world`;
//   3. a JavaScript engine is embedded:
//      - QuickJS (the default): Stepwise's own runtime, one core module per
//        world (`runtime/stepwise-qjs-<world>.wasm`, built from source by
//        guest-examples/js/runtime/build.sh), pre-initialised with the bundled
//        step by `stepwise plugins build-js`: ~1.4 MB, ~1 s to compile, and a
//        call starts with the step loaded. Sync and `async` steps alike (host
//        calls are synchronous, so a promise settles within the call).
//      - SpiderMonkey (componentize-js, ~12 MB, several times slower per
//        call), chosen explicitly (`runtime: 'spidermonkey'`): for a step
//        that needs what QuickJS lacks (`Intl`). `auto` is QuickJS.
import { rolldown } from 'rolldown';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sdk = resolve(here, 'index.js');

/** The host interfaces each world imports (they are bound to the step). */
const WORLDS = {
  'skippable-step-log': ['log'],
  'skippable-step-services': ['log', 'services'],
  'skippable-step-kv': ['log', 'config', 'kv'],
  'skippable-step': ['log', 'config', 'kv', 'services'],
};

/** The QuickJS runtime module of each world (see runtime/build.sh). */
const QUICKJS_MODULES = {
  'skippable-step-log': 'stepwise-qjs-log.wasm',
  'skippable-step-services': 'stepwise-qjs-services.wasm',
  'skippable-step-kv': 'stepwise-qjs-kv.wasm',
  'skippable-step': 'stepwise-qjs-full.wasm',
};

/**
 * @param {object} options
 * @param {string} options.source the step file (`export default createStep(...)`)
 * @param {string} options.output the component to write
 * @param {string} options.wit the WIT directory (stepwise:step@0.1.0; SpiderMonkey builds read it)
 * @param {string} [options.manifest] the plugin's manifest: the world follows its grants
 * @param {string} [options.world] one of WORLDS (default: from the manifest, else `skippable-step-log`)
 * @param {'auto'|'quickjs'|'spidermonkey'} [options.runtime] (default: `auto`)
 * @param {string} [options.quickjsRuntime] the directory of the QuickJS runtime modules
 *   (default: `$STEPWISE_QUICKJS_RUNTIME`, else `runtime/` beside this file)
 * @param {string} [options.stepwise] the `stepwise` binary (default: `$STEPWISE`, else `stepwise` on PATH)
 * @returns {Promise<{runtime: string, world: string, bytes: number, ms: number}>}
 */
export async function buildStep({ source, output, wit, manifest, world, runtime = 'auto', quickjsRuntime, stepwise }) {
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
    if (runtime === 'auto') runtime = 'quickjs';
    let component;
    if (runtime === 'quickjs') {
      const script = await bundle(ENTRY, 'iife', quickjsEntry(resolve(source)), quickjsHostModules(imports, source));
      component = await quickjs(script, world, work, output, { quickjsRuntime, stepwise });
    } else {
      const entry = await bundle(ENTRY, 'esm', spidermonkeyEntry(resolve(source), imports));
      const entryPath = join(work, 'entry.js');
      await writeFile(entryPath, entry);
      component = await spidermonkey(entryPath, wit, world);
      await writeFile(output, component);
    }
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

/** The QuickJS entry: binds the step to the runtime's host functions. */
function quickjsEntry(source) {
  return [
    `import { bindStep } from ${JSON.stringify(sdk)};`,
    `import step from ${JSON.stringify(source)};`,
    'globalThis.__stepwise_step = bindStep(step, globalThis.__stepwise_host);',
  ].join('\n');
}

/**
 * A step may also import the raw host interfaces (`stepwise:step/...`); on
 * QuickJS they are the runtime's host functions. Interfaces outside the
 * step's world, and WASI, are build errors that say why.
 */
function quickjsHostModules(imports, source) {
  const modules = {
    'stepwise:step/log@0.1.0': ['log', 'export const log = (level, message) => globalThis.__stepwise_host.log(level, message);'],
    'stepwise:step/services@0.1.0': ['services', 'export const call = (service, method, input) => globalThis.__stepwise_host.call(service, method, input);'],
    'stepwise:step/config@0.1.0': ['config', 'export const get = (key) => globalThis.__stepwise_host.configGet(key) ?? undefined;'],
    'stepwise:step/kv@0.1.0': ['kv', [
      'export const get = (key) => globalThis.__stepwise_host.kvGet(key) ?? undefined;',
      'export const set = (key, value) => globalThis.__stepwise_host.kvSet(key, value);',
      'export const delete_ = (key) => globalThis.__stepwise_host.kvDelete(key);',
      'export { delete_ as delete };',
    ].join('\n')],
  };
  return {
    name: 'stepwise-host-modules',
    resolveId(id) {
      if (id in modules) {
        const [needs] = modules[id];
        if (!imports.includes(needs)) {
          throw new Error(`${source} imports ${id}, which its world does not have: grant \`${needs}\` in the manifest`);
        }
        return `\0${id}`;
      }
      if (id.startsWith('wasi:')) {
        throw new Error(`${source} imports ${id}: WASI is not available to QuickJS steps (build with runtime 'spidermonkey')`);
      }
      if (id.startsWith('stepwise:')) throw new Error(`${source} imports ${id}, which Stepwise does not provide`);
      return null;
    },
    load(id) {
      return id.startsWith('\0stepwise:') ? modules[id.slice(1)][1] : null;
    },
  };
}

/** The SpiderMonkey entry: an ES module exporting the WIT functions. */
function spidermonkeyEntry(source, imports) {
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
    `const bound = bindStep(step, { ${host.join(', ')}, runtime: 'spidermonkey' });`,
    'export function invoke(ctx, input) { return bound.invoke(ctx, input); }',
    'export function compensate(ctx, data) { return bound.compensate(ctx, data); }',
  );
  return lines.join('\n');
}

/**
 * One script (`iife`, for QuickJS) or ES module (`esm`, for SpiderMonkey) of
 * `input` and what it imports; for SpiderMonkey host interfaces stay imports.
 */
async function bundle(input, format, entrySource, hostModules) {
  const plugins = [];
  if (entrySource !== undefined) {
    plugins.push({
      name: 'stepwise-entry',
      resolveId: (id) => (id === ENTRY ? id : null),
      load: (id) => (id === ENTRY ? entrySource : null),
    });
  }
  if (hostModules) plugins.push(hostModules);
  const external = hostModules ? [] : [/^stepwise:/, /^wasi:/];
  // An import nothing resolves (a Node built-in, a package not installed)
  // fails the build here, naming it, instead of failing the step at load.
  const onLog = (level, log, handle) => {
    if (log.code === 'UNRESOLVED_IMPORT') {
      throw new Error(`${input === ENTRY ? 'the step' : input}: ${log.message} (steps run in a sandbox: no Node built-ins; install packages with npm)`);
    }
    handle(level, log);
  };
  // npm packages that only have a `main` (CommonJS) resolve too.
  const resolve = { mainFields: ['module', 'main'] };
  const build = await rolldown({ input, plugins, platform: 'neutral', external, logLevel: 'warn', onLog, resolve });
  try {
    const { output } = await build.generate({ format });
    return output[0].code;
  } finally {
    await build.close();
  }
}

/** The QuickJS component: the world's runtime module pre-initialised with `script`. */
async function quickjs(script, world, work, output, options) {
  const dir = options.quickjsRuntime ?? process.env.STEPWISE_QUICKJS_RUNTIME ?? join(here, 'runtime');
  const runtime = join(dir, QUICKJS_MODULES[world]);
  if (!existsSync(runtime)) {
    throw new Error(`the QuickJS runtime module ${runtime} is missing: build it with guest-examples/js/runtime/build.sh ${dir}`);
  }
  const stepwise = options.stepwise ?? process.env.STEPWISE ?? 'stepwise';
  const scriptPath = join(work, 'step.js');
  await writeFile(scriptPath, script);
  const args = ['plugins', 'build-js', '--runtime', runtime, '--script', scriptPath, '--output', output];
  const built = spawnSync(stepwise, args, { encoding: 'utf8' });
  if (built.error) throw new Error(`running ${stepwise} (set STEPWISE to the stepwise binary): ${built.error.message}`);
  if (built.status !== 0) throw new Error(`${built.stderr.trim() || `${stepwise} ${args.join(' ')} failed`}`);
  return readFile(output);
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
