// Builds {{name}}.wasm from the step with @stepwise/sdk (the world follows
// the grants in {{name}}.toml; Stepwise's QuickJS runtime, sync or async).
// TypeScript is type-checked with tsc first.
import { buildStep } from '@stepwise/sdk/build';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const source = existsSync('step.ts') ? 'step.ts' : 'step.js';
if (source.endsWith('.ts')) {
  const tsc = spawnSync('node_modules/.bin/tsc', ['-p', '.'], { stdio: 'inherit' });
  if (tsc.status !== 0) process.exit(1);
}
const manifest = existsSync('{{name}}.toml') ? '{{name}}.toml' : undefined;
const built = await buildStep({ source, output: '{{name}}.wasm', wit: 'wit', manifest });
console.log(`built {{name}}.wasm (${built.runtime}, ${built.world}, ${built.bytes} bytes) in ${built.ms} ms`);
