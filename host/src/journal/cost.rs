//! What a guest call cost: fuel consumed, wall time, peak linear memory.
//! Recorded with each attempt and compensation in the log, summed per step
//! and per execution in its view, and per tenant and plugin in `/metrics`
//! (a counter a platform can bill from).

use serde::{Deserialize, Serialize};

/// The cost of one call, or a sum of calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCost {
    /// Calls counted (1 for one call).
    #[serde(default)]
    pub calls: u64,
    /// Fuel consumed (roughly, wasm instructions executed).
    pub fuel: u64,
    /// Wall time of the call, instantiation included, in microseconds.
    pub wall_us: u64,
    /// The largest linear memory the guest had, in bytes (for a sum: the
    /// largest of the calls).
    pub peak_memory_bytes: u64,
}

impl CallCost {
    /// Adds `other` to this sum: calls, fuel and time add up; peak memory is
    /// the larger of the two.
    pub fn add(&mut self, other: &CallCost) {
        self.calls = self.calls.saturating_add(other.calls);
        self.fuel = self.fuel.saturating_add(other.fuel);
        self.wall_us = self.wall_us.saturating_add(other.wall_us);
        self.peak_memory_bytes = self.peak_memory_bytes.max(other.peak_memory_bytes);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.calls == 0
    }
}

impl<'a> std::iter::Sum<&'a CallCost> for CallCost {
    fn sum<I: Iterator<Item = &'a CallCost>>(costs: I) -> Self {
        let mut sum = CallCost::default();
        costs.for_each(|cost| sum.add(cost));
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_add_up_and_peaks_take_the_largest() {
        let mut sum = CallCost::default();
        assert!(sum.is_empty());
        sum.add(&CallCost { calls: 1, fuel: 100, wall_us: 20, peak_memory_bytes: 65536 });
        sum.add(&CallCost { calls: 1, fuel: 50, wall_us: 5, peak_memory_bytes: 131072 });
        assert_eq!(sum, CallCost { calls: 2, fuel: 150, wall_us: 25, peak_memory_bytes: 131072 });
    }
}
