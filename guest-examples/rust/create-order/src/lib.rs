//! Accept-quote step 4: turn the quote into an order.
//!
//! `reject_reason` in the input makes the order system refuse the quote with a
//! permanent error, which rolls the saga back. Compensation cancels the order.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    cart_id: String,
    reservation_id: String,
    authorization_id: String,
    total: u64,
    #[serde(default)]
    reject_reason: Option<String>,
    #[serde(default)]
    metadata: Value,
}

#[derive(Serialize, Deserialize)]
struct Order {
    order_id: String,
    cart_id: String,
    reservation_id: String,
    authorization_id: String,
    total: u64,
    #[serde(default)]
    metadata: Value,
}

struct CreateOrder;

impl Guest for CreateOrder {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if let Some(reason) = input.reject_reason {
            warn(&format!("order system rejected cart {}: {reason}", input.cart_id));
            return Err(StepError::Permanent(format!("order rejected: {reason}")));
        }
        let order = Order {
            order_id: stable_id("order", &ctx.idempotency_key),
            cart_id: input.cart_id,
            reservation_id: input.reservation_id,
            authorization_id: input.authorization_id,
            total: input.total,
            metadata: input.metadata,
        };
        info(&format!("created order {} for cart {}", order.order_id, order.cart_id));
        Ok(respond_output(&order))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let order: Order = parse(&data)?;
        info(&format!("cancelled order {}", order.order_id));
        Ok(())
    }
}

stepwise_guest::export!(CreateOrder with_types_in stepwise_guest::bindings);
