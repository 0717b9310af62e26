//! JavaScript strings as Rust text.
//!
//! A JavaScript string may hold a lone surrogate (half of an emoji, from a
//! `slice` in the wrong place), which UTF-8 cannot hold: QuickJS hands such
//! text out as invalid UTF-8 and rquickjs refuses it. Where the host only
//! shows the text (a log line, an error message) it is taken with U+FFFD in
//! place of the surrogate, as `String.prototype.toWellFormed` does.

use rquickjs::function::This;
use rquickjs::{Ctx, Function, Object, String as JsString};

/// `text` as Rust text, lone surrogates replaced.
pub(crate) fn lossy<'js>(ctx: &Ctx<'js>, text: &JsString<'js>) -> String {
    if let Ok(text) = text.to_string() {
        return text;
    }
    let well_formed = || -> rquickjs::Result<String> {
        let prototype: Object = ctx.globals().get::<_, Object>("String")?.get("prototype")?;
        let method: Function = prototype.get("toWellFormed")?;
        method.call::<_, JsString>((This(text.clone()),))?.to_string()
    };
    well_formed().unwrap_or_else(|_| "(text that is not valid Unicode)".into())
}
