//! Applies a gift card to a cart, or skips itself when the cart has none:
//! a step built on the `skippable-step` world (Medusa's `StepResponse.skip()`).
//!
//! Input: `{ "gift_card": "GC-1"?, "total": 120 }`. Without a gift card the
//! step returns `skipped`: the execution goes on, the steps that read its
//! output are skipped, and nothing is compensated. With one, it returns the
//! amount applied; `compensate` logs the amount restored to the card.

use serde::{Deserialize, Serialize};
use stepwise_guest::skippable::Guest;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Cart {
    #[serde(default)]
    gift_card: Option<String>,
    total: f64,
}

#[derive(Serialize, Deserialize)]
struct Applied {
    card: String,
    amount: f64,
}

struct ApplyGiftCard;

impl Guest for ApplyGiftCard {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepOutcome, StepError> {
        let cart: Cart = parse(&input)?;
        let Some(card) = cart.gift_card.filter(|card| !card.is_empty()) else {
            return Ok(StepOutcome::Skipped("the cart has no gift card".into()));
        };
        info(&format!("applying {} from {card} (attempt {})", cart.total, ctx.attempt));
        let applied = Applied { card, amount: cart.total };
        Ok(StepOutcome::Done(respond(&applied, &applied)))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let applied: Applied = parse(&data)?;
        info(&format!("restored {} to {}", applied.amount, applied.card));
        Ok(())
    }
}

stepwise_guest::export_skippable!(ApplyGiftCard with_types_in stepwise_guest::skippable);
