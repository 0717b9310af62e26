//! The step graph: which node each reference reads (the dependencies a
//! definition infers from its templates, conditions and `after` lists), and
//! cycles among them.

use super::validate::{Located, Node};
use super::*;

/// The ids of the definition, to check references against.
pub(super) struct Graph<'a> {
    pub(super) nodes: &'a [Node<'a>],
    pub(super) index: &'a HashMap<StepId, usize>,
}

impl Graph<'_> {
    /// Checks one reference; returns the index of the node it reads, if any.
    pub(super) fn reference(
        &self,
        reference: &Reference,
        at: &Located<'_>,
        path: &str,
        fan_out: bool,
        problems: &mut Vec<Problem>,
    ) -> Option<usize> {
        let own = at.node.map(|node| node.id());
        let (target, is_hook) = match &reference.root {
            Root::Input => return None,
            Root::Item | Root::Index => {
                if !fan_out {
                    problems.push(at.problem(
                        path,
                        format!("`{reference}`: `$.item` and `$.index` exist only in a step with `for_each`"),
                    ));
                }
                return None;
            }
            Root::StepOutput(step) => (step, false),
            Root::Hook(hook) => (hook, true),
        };
        if Some(target.as_str()) == own {
            problems.push(at.problem(path, format!("`{reference}`: a step cannot reference its own output")));
            return None;
        }
        match self.index.get(target) {
            Some(&position) if self.nodes[position].is_hook() == is_hook => Some(position),
            Some(_) if is_hook => {
                problems.push(at.problem(path, format!("`{reference}`: `{target}` is a step, not a hook")));
                None
            }
            Some(_) => {
                problems.push(at.problem(
                    path,
                    format!("`{reference}`: `{target}` is a hook: read it as `$.hooks.{target}.output`"),
                ));
                None
            }
            None => {
                let what = if is_hook { "hook" } else { "step" };
                problems.push(at.problem(path, format!("`{reference}`: unknown {what} `{target}`")));
                None
            }
        }
    }

    /// Checks every reference of a template; returns the nodes it reads.
    pub(super) fn template_references(
        &self,
        template: &Template,
        at: &Located<'_>,
        fan_out: bool,
        problems: &mut Vec<Problem>,
    ) -> Vec<usize> {
        let mut found = Vec::new();
        for (path, reference) in template.references() {
            found.extend(self.reference(reference, at, &path, fan_out, problems));
        }
        found
    }

    /// Checks the step and hook ids an expression reads; returns their nodes.
    pub(super) fn expression_references(
        &self,
        expression: &Expression,
        at: &Located<'_>,
        fan_out: bool,
        problems: &mut Vec<Problem>,
    ) -> Vec<usize> {
        if expression.uses_element() && !fan_out {
            problems.push(at.problem(
                "",
                format!("`{}`: `item` and `index` exist only in a step with `for_each`", expression.source()),
            ));
        }
        let mut found = Vec::new();
        let steps = expression.steps().iter().map(|id| (format!("steps.{id}"), format!("$.steps.{id}.output")));
        let hooks = expression.hooks().iter().map(|id| (format!("hooks.{id}"), format!("$.hooks.{id}.output")));
        for (spelled, reference) in steps.chain(hooks) {
            let Ok(reference) = Reference::parse(&reference) else { continue };
            // Its problems name the expression, as written, not the template
            // spelling the check uses.
            let mut found_problems = Vec::new();
            found.extend(self.reference(&reference, at, "", true, &mut found_problems));
            problems.extend(found_problems.into_iter().map(|mut problem| {
                problem.message = problem.message.replacen(
                    &format!("`{reference}`"),
                    &format!("`{}` reads `{spelled}`", expression.source()),
                    1,
                );
                problem
            }));
        }
        found
    }

    /// Checks `after`; returns the nodes it names.
    pub(super) fn after(&self, node: &Node<'_>, after: &[String], problems: &mut Vec<Problem>) -> Vec<usize> {
        let mut found = Vec::new();
        for (position, name) in after.iter().enumerate() {
            match self.index.get(&StepId::new(name)) {
                Some(&dependency) if name != node.id() => found.push(dependency),
                Some(_) => problems.push(node.problem(format!("after[{position}]"), "a step cannot wait for itself")),
                None => problems.push(node.problem(format!("after[{position}]"), format!("unknown step `{name}`"))),
            }
        }
        found
    }
}

/// A dependency cycle as a path of step indices that starts and ends at the same step.
pub(super) fn find_cycle(steps: &[Step]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    pub(super) fn visit(node: usize, steps: &[Step], marks: &mut [Mark], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[node] = Mark::OnPath;
        path.push(node);
        for &next in &steps[node].dependencies {
            match marks[next] {
                Mark::OnPath => {
                    let start = path.iter().position(|&n| n == next).expect("on the path");
                    let mut cycle: Vec<usize> = path[start..].to_vec();
                    cycle.reverse(); // show the order in which steps would run
                    cycle.push(cycle[0]);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, steps, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[node] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; steps.len()];
    (0..steps.len()).find_map(|node| {
        if marks[node] == Mark::New {
            visit(node, steps, &mut marks, &mut Vec::new())
        } else {
            None
        }
    })
}
