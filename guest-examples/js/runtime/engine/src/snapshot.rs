//! The build-time half: take the step's bundled script, evaluate it once,
//! and keep what the calls need (see the crate docs).
//!
//! The snapshot runner (`stepwise js-component`) calls, in order:
//! 1. [`stepwise_js_source`]`(len)`: a buffer of `len` bytes for the script
//!    (UTF-8), which the runner fills;
//! 2. the world crate's `stepwise-js-init`, which calls [`initialize`]: it
//!    answers null, or the address of an error record (a little-endian `u32`
//!    length, then that many bytes of UTF-8) saying why the script cannot be
//!    a step (it does not parse, throws while loading, or binds no step).
//!
//! The runner then records the instance's memory and globals as the module's
//! initial state. The source buffer is freed by then: the snapshot holds the
//! compiled script, not its text.

use crate::host;
use crate::Host;
use rquickjs::context::EvalOptions;
use rquickjs::{CatchResultExt, CaughtError, Context, Function, Object, Persistent, Runtime};
use std::cell::RefCell;

/// What every call uses, made once by [`initialize`].
pub(crate) struct Loaded {
    // Dropped last (fields drop in order): the context and the functions
    // hold references into the runtime.
    pub(crate) invoke: Persistent<Function<'static>>,
    pub(crate) compensate: Persistent<Function<'static>>,
    pub(crate) context: Context,
    /// Owns everything above; never used directly once loaded.
    _runtime: Runtime,
}

struct SingleThreaded<T>(T);
// SAFETY: a wasm32-unknown-unknown component instance has one thread.
unsafe impl<T> Sync for SingleThreaded<T> {}

static SOURCE: SingleThreaded<RefCell<Vec<u8>>> = SingleThreaded(RefCell::new(Vec::new()));
static LOADED: SingleThreaded<RefCell<Option<&'static Loaded>>> = SingleThreaded(RefCell::new(None));

/// The runtime and the step's functions, once initialised.
pub(crate) fn loaded() -> Option<&'static Loaded> {
    *LOADED.0.borrow()
}

/// A buffer of `len` bytes for the bundled script (step 1 above).
#[unsafe(export_name = "stepwise-js-source")]
pub extern "C" fn stepwise_js_source(len: u32) -> *mut u8 {
    let mut source = SOURCE.0.borrow_mut();
    *source = vec![0; len as usize];
    source.as_mut_ptr()
}

/// The script's name in messages and stack traces.
const SCRIPT_NAME: &str = "step.js";

/// QuickJS's limit on the C (shadow) stack in linear memory. A JavaScript
/// call uses ~270 bytes of it and ~2.5 times that of the engine's native
/// wasm stack (1 MiB by default): at this limit deep recursion is a
/// `RangeError` the step can catch (after ~700 simple frames), well before
/// the native stack would trap.
const MAX_STACK_BYTES: usize = 192 * 1024;
/// QuickJS collects cycles once this much is allocated. An instance serves
/// one call and is thrown away: collecting earlier is work for nothing.
const GC_THRESHOLD_BYTES: usize = 16 * 1024 * 1024;

/// Evaluates the script in a new QuickJS runtime and keeps the step's
/// `invoke` and `compensate` (step 2 above).
pub fn initialize(world: Host) -> *const u8 {
    host::set(world);
    host::snapshotting(true);
    let result = load();
    host::snapshotting(false);
    match result {
        Ok(loaded) => {
            *LOADED.0.borrow_mut() = Some(Box::leak(Box::new(loaded)));
            std::ptr::null()
        }
        Err(message) => {
            let mut record = (message.len() as u32).to_le_bytes().to_vec();
            record.extend_from_slice(message.as_bytes());
            Box::leak(record.into_boxed_slice()).as_ptr()
        }
    }
}

fn load() -> Result<Loaded, String> {
    let source = std::mem::take(&mut *SOURCE.0.borrow_mut());
    let source = String::from_utf8(source).map_err(|_| "the script is not UTF-8".to_string())?;
    let runtime = Runtime::new().map_err(|error| format!("starting QuickJS: {error}"))?;
    runtime.set_max_stack_size(MAX_STACK_BYTES);
    runtime.set_gc_threshold(GC_THRESHOLD_BYTES);
    let context = Context::full(&runtime).map_err(|error| format!("starting QuickJS: {error}"))?;
    let (invoke, compensate) = context.with(|ctx| {
        host::install(&ctx).map_err(|error| format!("installing the host functions: {error}"))?;
        let mut options = EvalOptions::default();
        options.filename = Some(SCRIPT_NAME.into());
        ctx.eval_with_options::<(), _>(source, options)
            .catch(&ctx)
            .map_err(|error| format!("the script failed while loading: {}", describe(&error)))?;
        while ctx.execute_pending_job() {}
        let step: Object = ctx.globals().get("__stepwise_step").map_err(|_| {
            "the script bound no step: it must set globalThis.__stepwise_step = { invoke, compensate } \
             (the @stepwise/sdk build does)"
                .to_string()
        })?;
        let function = |name: &str| -> Result<Persistent<Function<'static>>, String> {
            let function: Function =
                step.get(name).map_err(|_| format!("globalThis.__stepwise_step.{name} is not a function"))?;
            Ok(Persistent::save(&ctx, function))
        };
        Ok::<_, String>((function("invoke")?, function("compensate")?))
    })?;
    // What loading left for the collector is not worth keeping in every instance.
    runtime.run_gc();
    Ok(Loaded { invoke, compensate, context, _runtime: runtime })
}

/// An error thrown while loading, with its kind, message and where it was.
fn describe(error: &CaughtError<'_>) -> String {
    match error {
        CaughtError::Exception(exception) => {
            let name: String = exception.get("name").unwrap_or_else(|_| "Error".into());
            let mut text = format!("{name}: {}", exception.message().unwrap_or_default());
            if let Some(stack) = exception.stack().filter(|stack| !stack.trim().is_empty()) {
                text.push('\n');
                text.push_str(stack.trim_end());
            }
            text
        }
        CaughtError::Value(value) => format!("the script threw {}", crate::call::describe(value)),
        CaughtError::Error(error) => error.to_string(),
    }
}
