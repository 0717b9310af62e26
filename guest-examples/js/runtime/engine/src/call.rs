//! The run-time half: one call of the step's `invoke` or `compensate`.
//!
//! The functions `@stepwise/sdk` bound take the context and the JSON text
//! and answer in the WIT's terms: `invoke` with `{ tag: 'done', val: {
//! output, compensation } }` or `{ tag: 'skipped', val: reason }`, and both
//! throw `{ tag: 'retryable' | 'permanent', val: message }` for a step error.
//! A promise is driven through QuickJS's job queue to its end (every host
//! call is synchronous, so an `async` step settles within the call). Anything
//! else a script manages to produce or throw is a retryable error saying
//! what it was: never a trap.

use crate::snapshot::{loaded, Loaded};
use crate::{Failure, Outcome, StepContext};
use rquickjs::{Ctx, Error, FromJs, Function, Object, Persistent, Value};

/// Calls the step's `invoke`.
pub fn invoke(step: &StepContext<'_>, input: &str) -> Result<Outcome, Failure> {
    call(step, input, |loaded| &loaded.invoke, outcome)
}

/// Calls the step's `compensate`.
pub fn compensate(step: &StepContext<'_>, data: &str) -> Result<(), Failure> {
    call(step, data, |loaded| &loaded.compensate, |_, _| Ok(()))
}

fn call<T>(
    step: &StepContext<'_>,
    json: &str,
    function: fn(&Loaded) -> &Persistent<Function<'static>>,
    answer: for<'js> fn(&Ctx<'js>, Value<'js>) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let Some(loaded) = loaded() else {
        return Err(Failure::Permanent(
            "this JavaScript step was not pre-initialised with its script (build it with @stepwise/sdk)".into(),
        ));
    };
    loaded.context.with(|ctx| {
        let function = function(loaded).clone().restore(&ctx).map_err(|error| internal(&error))?;
        let context = context_object(&ctx, step).map_err(|error| internal(&error))?;
        match function.call::<_, Value>((context, json)) {
            Ok(value) => settle(&ctx, value, answer),
            Err(Error::Exception) => Err(thrown(&ctx, ctx.catch())),
            Err(error) => Err(internal(&error)),
        }
    })
}

/// The step context as the SDK reads it (the WIT record, camelCase).
fn context_object<'js>(ctx: &Ctx<'js>, step: &StepContext<'_>) -> rquickjs::Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    object.set("workflow", step.workflow)?;
    object.set("executionId", step.execution_id)?;
    object.set("stepId", step.step_id)?;
    object.set("attempt", step.attempt)?;
    object.set("idempotencyKey", step.idempotency_key)?;
    Ok(object)
}

/// The value itself, or what the promise it is settles to.
fn settle<'js, T>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    answer: fn(&Ctx<'js>, Value<'js>) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let Some(promise) = value.as_promise() else {
        return answer(ctx, value);
    };
    match promise.finish::<Value>() {
        Ok(value) => answer(ctx, value),
        Err(Error::Exception) => Err(thrown(ctx, ctx.catch())),
        Err(Error::WouldBlock) => Err(Failure::Retryable(
            "the step's promise never settled: it waits for something that cannot happen inside a call \
             (host calls are synchronous, and there are no timers)"
                .into(),
        )),
        Err(error) => Err(internal(&error)),
    }
}

/// `invoke`'s answer: `{ tag: 'done', val: { output, compensation } }` or
/// `{ tag: 'skipped', val }`.
fn outcome<'js>(_ctx: &Ctx<'js>, value: Value<'js>) -> Result<Outcome, Failure> {
    let invalid = || Failure::Retryable(format!("the step answered {}, not a step outcome", describe(&value)));
    let object = value.as_object().ok_or_else(invalid)?;
    let tag: String = object.get("tag").map_err(|_| invalid())?;
    match tag.as_str() {
        "done" => {
            let response: Object = object.get("val").map_err(|_| invalid())?;
            let output: String = response.get("output").map_err(|_| invalid())?;
            let compensation: Option<String> = response.get("compensation").map_err(|_| invalid())?;
            Ok(Outcome::Done { output, compensation })
        }
        "skipped" => Ok(Outcome::Skipped(object.get("val").map_err(|_| invalid())?)),
        _ => Err(invalid()),
    }
}

/// What a step threw (or rejected with) as a step error.
fn thrown<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> Failure {
    if let Some(object) = value.as_object() {
        let tag: Option<String> = object.get("tag").ok();
        let message = || text_of(ctx, object.get::<_, Value>("val").ok());
        match tag.as_deref() {
            Some("permanent") => return Failure::Permanent(message()),
            Some("retryable") => return Failure::Retryable(message()),
            _ => {}
        }
        if object.is_error() {
            let name = text_of(ctx, object.get::<_, Value>("name").ok());
            let mut text = format!("{name}: {}", text_of(ctx, object.get::<_, Value>("message").ok()));
            let stack = text_of(ctx, object.get::<_, Value>("stack").ok());
            if !stack.trim().is_empty() {
                text.push('\n');
                text.push_str(stack.trim_end());
            }
            return Failure::Retryable(text);
        }
    }
    Failure::Retryable(format!("thrown: {}", describe(&value)))
}

/// A property's text (`String(value)`), lone surrogates replaced; empty when
/// absent or when making it text throws.
fn text_of<'js>(ctx: &Ctx<'js>, value: Option<Value<'js>>) -> String {
    let Some(value) = value.filter(|value| !value.is_undefined()) else {
        return String::new();
    };
    match rquickjs::Coerced::<rquickjs::String>::from_js(ctx, value) {
        Ok(text) => crate::text::lossy(ctx, &text.0),
        Err(_) => String::new(),
    }
}

/// A value as text for an error message: JSON where it has one.
pub(crate) fn describe(value: &Value<'_>) -> String {
    if let Some(text) = value.as_string() {
        return crate::text::lossy(value.ctx(), text);
    }
    match value.ctx().json_stringify(value.clone()) {
        Ok(Some(json)) => crate::text::lossy(value.ctx(), &json),
        _ => format!("a value of type {}", type_of(value)),
    }
}

/// JavaScript's `typeof` of a value.
fn type_of(value: &Value<'_>) -> &'static str {
    if value.is_undefined() {
        "undefined"
    } else if value.is_function() {
        "function"
    } else if value.is_symbol() {
        "symbol"
    } else if value.is_big_int() {
        "bigint"
    } else if value.is_bool() {
        "boolean"
    } else if value.is_number() {
        "number"
    } else if value.is_string() {
        "string"
    } else {
        "object"
    }
}

fn internal(error: &Error) -> Failure {
    Failure::Retryable(format!("the JavaScript runtime failed: {error}"))
}
