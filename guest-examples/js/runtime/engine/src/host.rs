//! What a step's script can reach of the host: `globalThis.__stepwise_host`
//! (the world's imports, as `@stepwise/sdk` expects them: `log`, and where
//! the world has them `call`, `configGet`, `kvGet`/`kvSet`/`kvDelete`), a
//! random source for `Math.random`, QuickJS's clock, and a `fetch` that says
//! to use a service instead.
//!
//! The snapshot keeps everything the script built at build time, so
//! anything that must differ per call is asked for at the call: `Math.random`
//! draws from the host's (inert) WASI random source on every use instead of
//! the seed QuickJS would have frozen into the snapshot, and the clock reads
//! the host's wall clock.

use crate::{Host, Level};
use rquickjs::{Ctx, Exception, Function, Object, Result};
use std::cell::Cell;

/// A value only ever touched by the component's single thread.
struct SingleThreaded<T>(T);
// SAFETY: a wasm32-unknown-unknown component instance has one thread.
unsafe impl<T> Sync for SingleThreaded<T> {}

static HOST: SingleThreaded<Cell<Option<Host>>> = SingleThreaded(Cell::new(None));
static SNAPSHOTTING: SingleThreaded<Cell<bool>> = SingleThreaded(Cell::new(false));

/// The world's imports (set once, by the snapshot).
fn host() -> Host {
    HOST.0.get().expect("the runtime is initialised before any call")
}

/// Keeps the world's imports for the script's host functions.
pub(crate) fn set(host: Host) {
    HOST.0.set(Some(host));
}

/// Whether the build-time snapshot is running: the host's imports may not be
/// called then (its runner provides none), and the clock reads zero.
pub(crate) fn snapshotting(on: bool) {
    SNAPSHOTTING.0.set(on);
}

/// Installs `globalThis.__stepwise_host`, `console`, the per-call
/// `Math.random` and a `fetch` that points at services.
pub(crate) fn install(ctx: &Ctx<'_>) -> Result<()> {
    let host = host();
    let object = Object::new(ctx.clone())?;
    object.set("runtime", "quickjs")?;
    object.set("log", Function::new(ctx.clone(), log)?)?;
    if host.call.is_some() {
        let call = |ctx: Ctx<'_>, service: String, method: String, input: String| -> Result<String> {
            at_call(&ctx, "services.call")?;
            let call = crate::host::host().call.expect("installed only when the world has services");
            call(&service, &method, &input).map_err(|message| {
                // The SDK reads `payload` (as jco-built components throw it).
                match Exception::from_message(ctx.clone(), &message) {
                    Ok(error) => match error.as_object().set("payload", message.as_str()) {
                        Ok(()) => ctx.throw(error.into_value()),
                        Err(error) => error,
                    },
                    Err(error) => error,
                }
            })
        };
        object.set("call", Function::new(ctx.clone(), call)?)?;
    }
    if host.config_get.is_some() {
        let get = |ctx: Ctx<'_>, key: String| -> Result<Option<String>> {
            at_call(&ctx, "config.get")?;
            Ok((crate::host::host().config_get.expect("installed only when the world has config"))(&key))
        };
        object.set("configGet", Function::new(ctx.clone(), get)?)?;
    }
    if host.kv.is_some() {
        let kv = || crate::host::host().kv.expect("installed only when the world has kv");
        let get = move |ctx: Ctx<'_>, key: String| -> Result<Option<String>> {
            at_call(&ctx, "kv.get")?;
            Ok((kv().get)(&key))
        };
        object.set("kvGet", Function::new(ctx.clone(), get)?)?;
        let set = move |ctx: Ctx<'_>, key: String, value: String| -> Result<()> {
            at_call(&ctx, "kv.set")?;
            (kv().set)(&key, &value).map_err(|message| Exception::throw_message(&ctx, &message))
        };
        object.set("kvSet", Function::new(ctx.clone(), set)?)?;
        let delete = move |ctx: Ctx<'_>, key: String| -> Result<bool> {
            at_call(&ctx, "kv.delete")?;
            Ok((kv().delete)(&key))
        };
        object.set("kvDelete", Function::new(ctx.clone(), delete)?)?;
    }
    ctx.globals().set("__stepwise_host", object)?;
    let math: Object = ctx.globals().get("Math")?;
    let random = |ctx: Ctx<'_>| -> Result<f64> {
        at_call(&ctx, "Math.random")?;
        Ok(random())
    };
    math.set("random", Function::new(ctx.clone(), random)?)?;
    ctx.eval::<(), _>(SCRIPT_GLOBALS)?;
    Ok(())
}

/// `log(level, text)`; a lone surrogate in the text does not fail the step.
fn log<'js>(ctx: Ctx<'js>, level: String, text: rquickjs::String<'js>) -> Result<()> {
    at_call(&ctx, "log")?;
    (host().log)(level_of(&level), &crate::text::lossy(&ctx, &text));
    Ok(())
}

/// What a step's script finds besides the host: `console` writes to the
/// step's log (as Node's does to its output), and `fetch` says to use a
/// service (a permanent failure: retrying cannot fix it).
const SCRIPT_GLOBALS: &str = r#"
(() => {
  const text = (parts) => parts.map((part) => {
    if (typeof part === 'string') return part;
    try { return part instanceof Error ? `${part.name}: ${part.message}` : JSON.stringify(part) ?? String(part); }
    catch { return String(part); }
  }).join(' ');
  const line = (level) => (...parts) => globalThis.__stepwise_host.log(level, text(parts));
  globalThis.console = {
    log: line('info'), info: line('info'), debug: line('debug'), trace: line('trace'),
    warn: line('warn'), error: line('error'),
  };
  globalThis.fetch = () => {
    throw { tag: 'permanent', val: 'fetch is not available to JavaScript steps: reach the outside world through a host service (context.container.resolve)' };
  };
})();
"#;

/// Refuses `what` while the build loads the script: the host is not there
/// then, and what it answered would be frozen into every call.
fn at_call(ctx: &Ctx<'_>, what: &str) -> Result<()> {
    if SNAPSHOTTING.0.get() {
        return Err(Exception::throw_message(
            ctx,
            &format!(
                "{what} was called while the step is loading: the build runs the script's top level once, and \
                 what the host answered then would be frozen into every call; call it from invoke or compensate"
            ),
        ));
    }
    Ok(())
}

fn level_of(level: &str) -> Level {
    match level {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => Level::Info,
    }
}

/// A double in [0, 1) from 53 random bits of the host's random source.
fn random() -> f64 {
    let bits = wasip2::random::insecure::get_insecure_random_u64() >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// QuickJS's clock (`Date.now()`, `new Date()`): microseconds since the Unix
/// epoch, from the host's wall clock. rquickjs-sys's wasm32-unknown-unknown
/// shim imports it from `env`; defining it here resolves that import inside
/// the module.
#[unsafe(no_mangle)]
pub extern "C" fn __rquickjs_host_now_us() -> f64 {
    if SNAPSHOTTING.0.get() {
        return 0.0;
    }
    let now = wasip2::clocks::wall_clock::now();
    now.seconds as f64 * 1_000_000.0 + f64::from(now.nanoseconds / 1_000)
}
