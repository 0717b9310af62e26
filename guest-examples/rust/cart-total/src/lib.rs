//! The cart total in Rust, the same logic as the JavaScript and Python
//! `cart-total` steps (the benchmark compares them, and this logic compiled
//! natively). Test knobs in the input: `fail: "retryable" | "permanent"`
//! raises that error; `spin: true` loops forever (the sandbox must stop it).

use serde::{Deserialize, Serialize};
use stepwise_guest::*;

#[derive(Deserialize)]
struct Item {
    quantity: u64,
    unit_price: u64,
}

#[derive(Deserialize)]
struct Cart {
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    spin: bool,
}

#[derive(Serialize)]
struct Total {
    total: u64,
    units: u64,
    lines: usize,
}

struct CartTotal;

impl Guest for CartTotal {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let cart: Cart = parse(&input)?;
        match cart.fail.as_deref() {
            Some("retryable") => return Err(StepError::Retryable("failed as asked (retryable, Rust)".into())),
            Some("permanent") => return Err(StepError::Permanent("failed as asked (permanent, Rust)".into())),
            _ => {}
        }
        if cart.spin {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        let total = cart.items.iter().map(|item| item.quantity * item.unit_price).sum();
        let units = cart.items.iter().map(|item| item.quantity).sum();
        if ctx.attempt > 1 {
            info(&format!("attempt {}", ctx.attempt));
        }
        Ok(respond_output(&Total { total, units, lines: cart.items.len() }))
    }

    fn compensate(_ctx: StepContext, _data: Json) -> Result<(), StepError> {
        info("cart-total changed nothing (Rust)");
        Ok(())
    }
}

stepwise_guest::export!(CartTotal with_types_in stepwise_guest::bindings);
