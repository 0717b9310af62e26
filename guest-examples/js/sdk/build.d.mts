// Types of @stepwise/sdk/build (see build.mjs).

export type World = 'skippable-step-log' | 'skippable-step-services' | 'skippable-step-kv' | 'skippable-step';

export interface BuildOptions {
  /** The step file (`export default createStep(...)`), JavaScript or TypeScript. */
  source: string;
  /** The component to write. */
  output: string;
  /** The WIT directory (stepwise:step@0.1.0; SpiderMonkey builds read it). */
  wit: string;
  /** The plugin's manifest: the world follows its grants. */
  manifest?: string;
  /** Default: from the manifest, else `skippable-step-log`. */
  world?: World;
  /** Default `auto` (QuickJS). */
  runtime?: 'auto' | 'quickjs' | 'spidermonkey';
  /** The directory of the QuickJS runtime modules (default `$STEPWISE_QUICKJS_RUNTIME`, else `runtime/`). */
  quickjsRuntime?: string;
  /** The `stepwise` binary (default `$STEPWISE`, else `stepwise` on PATH). */
  stepwise?: string;
}

export function buildStep(options: BuildOptions): Promise<{ runtime: string; world: World; bytes: number; ms: number }>;

/** The smallest world whose imports a manifest grants. */
export function worldFor(manifestText: string, path?: string): World;
