//! An execution as its owner left it when it came to rest (over, or waiting
//! for the outside world): its status and error at once, its full view only
//! when someone asks for it. Building the view copies every step's input,
//! output and the whole timeline, which a caller that only needs to know how
//! the execution ended (a benchmark loop, a scheduler) should not pay for.

use super::machine::{ExecutionError, Machine};
use super::view::ExecutionView;
use crate::journal::{ExecutionId, ExecutionStatus};
use std::sync::Arc;

/// An execution at rest.
pub struct Rested(Kept);

enum Kept {
    /// The state its owner left with (the owner has stopped: nothing changes it).
    Machine(Arc<Machine>),
    /// A view built already (read from elsewhere: another host, the store).
    View(Box<ExecutionView>),
}

impl Rested {
    /// The state an owner leaves with.
    pub(super) fn left(machine: Arc<Machine>) -> Self {
        Self(Kept::Machine(machine))
    }

    /// Its id.
    pub fn execution_id(&self) -> &ExecutionId {
        match &self.0 {
            Kept::Machine(machine) => machine.execution_id(),
            Kept::View(view) => &view.execution_id,
        }
    }

    /// Its status.
    pub fn status(&self) -> ExecutionStatus {
        match &self.0 {
            Kept::Machine(machine) => machine.status(),
            Kept::View(view) => view.status,
        }
    }

    /// Why it did not succeed, if it did not.
    pub fn error(&self) -> Option<&ExecutionError> {
        match &self.0 {
            Kept::Machine(machine) => machine.error(),
            Kept::View(view) => view.error.as_ref(),
        }
    }

    /// The full view (built now, when the state was kept).
    pub fn into_view(self) -> ExecutionView {
        match self.0 {
            Kept::Machine(machine) => ExecutionView::of(&machine),
            Kept::View(view) => *view,
        }
    }
}

impl From<ExecutionView> for Rested {
    fn from(view: ExecutionView) -> Self {
        Self(Kept::View(Box::new(view)))
    }
}
