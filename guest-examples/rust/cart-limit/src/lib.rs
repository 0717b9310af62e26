//! Hook handler for `validate-cart`: a merchant's spending limit.
//!
//! Vetoes (a permanent error) a cart whose total exceeds `max_total` from
//! the plugin's manifest config, so the whole execution rolls back. It
//! changes nothing, so its compensation only logs.

use serde::{Deserialize, Serialize};
use stepwise_guest::bindings::stepwise::step::config;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Cart {
    id: String,
    total: u64,
}

#[derive(Serialize)]
struct Approval {
    approved: bool,
    cart_id: String,
    limit: u64,
}

struct CartLimit;

impl Guest for CartLimit {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let cart: Cart = parse(&input)?;
        let limit = config::get("max_total")
            .ok_or_else(|| StepError::Permanent("config `max_total` is not set in the manifest".into()))?
            .parse::<u64>()
            .map_err(|e| StepError::Permanent(format!("config `max_total` is not a number: {e}")))?;
        if cart.total > limit {
            return Err(StepError::Permanent(format!(
                "cart {} total {} exceeds this merchant's limit of {limit}",
                cart.id, cart.total
            )));
        }
        info(&format!("cart {} within the limit of {limit}", cart.id));
        Ok(respond_output(&Approval { approved: true, cart_id: cart.id, limit }))
    }

    fn compensate(_ctx: StepContext, _data: Json) -> Result<(), StepError> {
        info("cart-limit changed nothing: nothing to undo");
        Ok(())
    }
}

stepwise_guest::export!(CartLimit with_types_in stepwise_guest::bindings);
