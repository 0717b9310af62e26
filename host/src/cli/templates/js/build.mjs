// Builds {{name}}.wasm from step.js with componentize-js.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'step.js',
  witPath: 'wit',
  worldName: 'step-log',
  disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
});
await writeFile('{{name}}.wasm', component);
console.log('built {{name}}.wasm');
