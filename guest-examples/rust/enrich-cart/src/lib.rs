//! Hook handler for `validate-cart`: enriches the cart with a loyalty tier
//! and remembers, in the plugin's kv namespace (private to the tenant), the
//! last cart it saw and how many.
//!
//! Its compensation restores what it wrote: the previous `last_cart` (or
//! none) and the count, so a vetoed execution leaves no trace in kv.

use serde::{Deserialize, Serialize};
use stepwise_guest::bindings::stepwise::step::kv;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Cart {
    id: String,
    total: u64,
}

#[derive(Serialize)]
struct Enrichment {
    cart_id: String,
    loyalty_tier: &'static str,
    previous_cart: Option<String>,
    carts_seen: u64,
}

#[derive(Serialize, Deserialize)]
struct Undo {
    previous_cart: Option<String>,
    previous_count: u64,
}

fn set(key: &str, value: &str) -> Result<(), StepError> {
    kv::set(key, value).map_err(|e| StepError::Retryable(format!("kv set {key}: {e}")))
}

struct EnrichCart;

impl Guest for EnrichCart {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let cart: Cart = parse(&input)?;
        let previous_cart = kv::get("last_cart");
        let previous_count = kv::get("carts_seen").and_then(|n| n.parse().ok()).unwrap_or(0u64);
        set("last_cart", &cart.id)?;
        set("carts_seen", &(previous_count + 1).to_string())?;
        let loyalty_tier = if cart.total >= 5000 { "gold" } else { "silver" };
        info(&format!("cart {} is {loyalty_tier}", cart.id));
        let output = Enrichment {
            cart_id: cart.id,
            loyalty_tier,
            previous_cart: previous_cart.clone(),
            carts_seen: previous_count + 1,
        };
        Ok(respond(&output, &Undo { previous_cart, previous_count }))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let undo: Undo = parse(&data)?;
        match &undo.previous_cart {
            Some(cart) => set("last_cart", cart)?,
            None => {
                kv::delete("last_cart");
            }
        }
        if undo.previous_count == 0 {
            kv::delete("carts_seen");
        } else {
            set("carts_seen", &undo.previous_count.to_string())?;
        }
        info(&format!("restored last_cart to {:?} and carts_seen to {}", undo.previous_cart, undo.previous_count));
        Ok(())
    }
}

stepwise_guest::export!(EnrichCart with_types_in stepwise_guest::bindings);
