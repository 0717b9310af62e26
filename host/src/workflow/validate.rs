//! Validation: every check a definition must pass before anything runs
//! (ids, plugins, references, expressions, fan-out, hooks, retry policies),
//! collecting every problem with its step and field rather than stopping at
//! the first. Dependencies are inferred in [`super::graph`]. This room does
//! no I/O.

use super::graph::{find_cycle, Graph};
use super::*;

type Validated = (Vec<Step>, Option<Template>, HashMap<StepId, usize>);

pub(super) fn validate(
    definition: &WorkflowDefinition,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<Validated> {
    if !StepId::is_valid(&definition.name) {
        problems.push(Problem::workflow(
            Some("name"),
            format!(
                "`{}` is not a valid workflow name (lowercase letters, digits, `-`, `_`, starting with a letter)",
                definition.name
            ),
        ));
    }
    if let Some(retry) = &definition.retry {
        check_retry(retry, None, problems);
    }
    if let Some(schedule) = &definition.schedule {
        if let Err(error) = <cron::Schedule as std::str::FromStr>::from_str(schedule) {
            problems.push(Problem::workflow(
                Some("schedule"),
                format!("`{schedule}` is not a cron expression (sec min hour day month weekday [year]): {error}"),
            ));
        }
    }
    if let Some(event) = &definition.on_event {
        let valid = !event.is_empty() && event.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            problems.push(Problem::workflow(
                Some("on_event"),
                format!("`{event}` is not a valid event name (letters, digits, `.`, `_`, `-`)"),
            ));
        } else if event.len() > super::MAX_EVENT_NAME_CHARS {
            problems.push(Problem::workflow(
                Some("on_event"),
                format!(
                    "an event name has at most {} characters, this one {} (it could never be published)",
                    super::MAX_EVENT_NAME_CHARS,
                    event.len()
                ),
            ));
        }
    }
    if definition.timeout_ms == Some(0) {
        problems.push(Problem::workflow(Some("timeout_ms"), "must be greater than 0"));
    }
    if definition.steps.is_empty() {
        problems.push(Problem::workflow(Some("steps"), "a workflow needs at least one step"));
        return None;
    }

    // Steps, then hooks, share one id space and one index.
    let nodes: Vec<Node<'_>> =
        definition.steps.iter().map(Node::Step).chain(definition.hooks.iter().map(Node::Hook)).collect();
    let mut index = HashMap::new();
    for (position, node) in nodes.iter().enumerate() {
        let id = node.id();
        if !StepId::is_valid(id) {
            let what = if node.is_hook() { "hook name" } else { "step id" };
            problems.push(node.problem(
                node.id_field(),
                format!("`{id}` is not a valid {what} (lowercase letters, digits, `-`, `_`, starting with a letter)"),
            ));
        } else if index.insert(StepId::new(id), position).is_some() {
            let what = if node.is_hook() { "hook name" } else { "step id" };
            problems
                .push(node.problem(node.id_field(), format!("duplicate {what} `{id}` (steps and hooks share ids)")));
        }
    }
    let graph = Graph { nodes: &nodes, index: &index };

    let mut steps = Vec::with_capacity(nodes.len());
    for node in &nodes {
        steps.push(match node {
            Node::Step(step) => validate_step(definition, step, &graph, plugins, problems),
            Node::Hook(hook) => validate_hook(definition, hook, &graph, problems),
        });
    }
    let output = definition.output.as_ref().and_then(|output| {
        let template = compile_template(output, None, "output", problems)?;
        let context = Located { node: None, field: "output" };
        graph.template_references(&template, &context, false, problems);
        Some(template)
    });

    let steps: Vec<Step> = steps.into_iter().collect::<Option<_>>()?;
    if let Some(cycle) = find_cycle(&steps) {
        let path: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
        problems.push(nodes[cycle[0]].problem("input", format!("dependency cycle: {}", path.join(" -> "))));
    }
    Some((steps, output, index))
}

/// A node of the definition: a step or a hook.
pub(super) enum Node<'a> {
    Step(&'a StepDefinition),
    Hook(&'a HookDefinition),
}

impl Node<'_> {
    pub(super) fn id(&self) -> &str {
        match self {
            Node::Step(step) => &step.id,
            Node::Hook(hook) => &hook.name,
        }
    }

    pub(super) fn is_hook(&self) -> bool {
        matches!(self, Node::Hook(_))
    }

    pub(super) fn id_field(&self) -> &'static str {
        if self.is_hook() {
            "name"
        } else {
            "id"
        }
    }

    pub(super) fn problem(&self, field: impl Into<String>, message: impl Into<String>) -> Problem {
        match self {
            Node::Step(step) => Problem::step(&step.id, field, message),
            Node::Hook(hook) => Problem::hook(&hook.name, field, message),
        }
    }
}

/// Where a reference was written, for error messages.
pub(super) struct Located<'a> {
    pub(super) node: Option<&'a Node<'a>>,
    pub(super) field: &'a str,
}

impl Located<'_> {
    pub(super) fn problem(&self, path: &str, message: String) -> Problem {
        let field = if path.is_empty() { self.field.to_string() } else { format!("{}.{path}", self.field) };
        match self.node {
            Some(node) => node.problem(field, message),
            None => Problem::workflow(Some(&field), message),
        }
    }
}

fn compile_expression(source: &str, at: &Located<'_>, problems: &mut Vec<Problem>) -> Option<Expression> {
    Expression::compile(source).map_err(|message| problems.push(at.problem("", message))).ok()
}

fn validate_step(
    definition: &WorkflowDefinition,
    step: &StepDefinition,
    graph: &Graph<'_>,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<Step> {
    let id = &step.id;
    let node = Node::Step(step);
    let fan_out = step.for_each.is_some();
    let mut data = BTreeSet::new();
    let kind = match (&step.plugin, &step.workflow, &step.transform) {
        (Some(plugin), None, None) => validate_plugin(id, plugin, definition.tenant.as_deref(), plugins, problems),
        (None, Some(name), None) => {
            if !StepId::is_valid(name) {
                problems.push(Problem::step(id, "workflow", format!("`{name}` is not a valid workflow name")));
            }
            if step.is_async {
                problems.push(Problem::step(id, "async", "a workflow step cannot be async (its child can be)"));
            }
            if step.timeout_ms.is_some() {
                problems.push(Problem::step(
                    id,
                    "timeout_ms",
                    "not supported on a workflow step: set `timeout_ms` in the child workflow",
                ));
            }
            Some(StepKind::Workflow(name.clone()))
        }
        (None, None, Some(source)) => {
            let at = Located { node: Some(&node), field: "transform" };
            for (field, present) in [
                ("input", step.input.as_object().is_none_or(|fields| !fields.is_empty())),
                ("for_each", fan_out),
                ("async", step.is_async),
                ("retry", step.retry.is_some()),
                ("timeout_ms", step.timeout_ms.is_some()),
            ] {
                if present {
                    problems.push(Problem::step(
                        id,
                        field,
                        format!("a transform step takes no `{field}` (its expression reads what it needs)"),
                    ));
                }
            }
            compile_expression(source, &at, problems).map(|expression| {
                data.extend(graph.expression_references(&expression, &at, false, problems));
                StepKind::Transform(expression)
            })
        }
        _ => {
            problems.push(Problem::step(
                id,
                "plugin",
                "a step needs exactly one of `plugin`, `workflow` or `transform`",
            ));
            None
        }
    };
    if step.timeout_ms == Some(0) {
        problems.push(Problem::step(id, "timeout_ms", "must be greater than 0"));
    }
    if step.transform.is_some() && !step.on_permanent_failure.is_fail() {
        problems.push(Problem::step(
            id,
            "on_permanent_failure",
            "applies to plugin and workflow steps (a transform that cannot be evaluated fails its execution)",
        ));
    }
    let retry = step.retry.clone().or_else(|| definition.retry.clone()).unwrap_or_default();
    if let Some(own) = &step.retry {
        check_retry(own, Some(&node), problems);
    }
    let for_each = match &step.for_each {
        Some(text) => validate_for_each(&node, text, step.max_concurrency, graph, &mut data, problems),
        None => {
            if step.max_concurrency.is_some() {
                problems.push(Problem::step(id, "max_concurrency", "needs `for_each`"));
            }
            None
        }
    };
    let input = compile_template(&step.input, Some(&node), "input", problems);
    if let Some(input) = &input {
        let at = Located { node: Some(&node), field: "input" };
        data.extend(graph.template_references(input, &at, fan_out, problems));
    }
    let when = step.when.as_ref().and_then(|source| {
        let at = Located { node: Some(&node), field: "when" };
        let expression = compile_expression(source, &at, problems)?;
        data.extend(graph.expression_references(&expression, &at, false, problems));
        Some(expression)
    });
    let mut dependencies = data.clone();
    dependencies.extend(graph.after(&node, &step.after, problems));
    Some(Step {
        id: StepId::new(id),
        kind: kind?,
        input: input?,
        dependencies: dependencies.into_iter().collect(),
        data_dependencies: data.into_iter().collect(),
        when,
        for_each,
        retry,
        timeout: step.timeout_ms.map(Duration::from_millis),
        is_async: step.is_async,
        on_permanent_failure: step.on_permanent_failure,
    })
}

/// A step's `plugin`: a valid name (and version) of a plugin that can be
/// loaded; a tenant's workflow (`tenant = "..."`) may name only the
/// platform's plugins and its own, a platform workflow only the platform's
/// (a tenant's code would see other tenants' data). The owner is
/// checked whenever the workflow is validated, so a workflow waiting for a
/// plugin does not go live with another tenant's of that name.
fn validate_plugin(
    id: &str,
    plugin: &str,
    tenant: Option<&str>,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<StepKind> {
    let (name, version) = match plugin.split_once('@') {
        Some((name, version)) => (name, Some(version.to_string())),
        None => (plugin, None),
    };
    if !PluginName::is_valid(name) {
        problems.push(Problem::step(id, "plugin", format!("`{name}` is not a valid plugin name")));
    } else if !plugins.contains_plugin(name) {
        problems.push(Problem::missing_plugin(id, name));
    } else if let Some(owner) = plugins.plugin_owner(name).filter(|owner| Some(owner.as_str()) != tenant) {
        let whose = match tenant {
            Some(tenant) => format!("another tenant (`{owner}`): tenant `{tenant}`'s workflow cannot run it"),
            None => format!("tenant `{owner}`: a platform workflow, which runs for every tenant, cannot run it"),
        };
        problems.push(Problem::step(id, "plugin", format!("plugin `{name}` belongs to {whose}")));
    }
    if let Some(version) = &version {
        let valid = !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid {
            problems.push(Problem::step(id, "plugin", format!("`{plugin}`: `{version}` is not a version")));
        }
    }
    Some(StepKind::Plugin { name: PluginName::new(name), version })
}

fn validate_for_each(
    node: &Node<'_>,
    text: &str,
    max_concurrency: Option<u32>,
    graph: &Graph<'_>,
    data: &mut BTreeSet<usize>,
    problems: &mut Vec<Problem>,
) -> Option<ForEach> {
    if max_concurrency == Some(0) {
        problems.push(node.problem("max_concurrency", "must be at least 1"));
    }
    let at = Located { node: Some(node), field: "for_each" };
    if !text.starts_with("$.") {
        problems.push(at.problem(
            "",
            format!("`{text}` is not a reference: `for_each` names an array, like `$.steps.cart.output.items`"),
        ));
        return None;
    }
    let reference = Reference::parse(text).map_err(|message| problems.push(at.problem("", message))).ok()?;
    data.extend(graph.reference(&reference, &at, "", false, problems));
    let max_concurrency = max_concurrency.map_or(DEFAULT_MAX_CONCURRENCY, |max| max.max(1) as usize);
    Some(ForEach { items: reference, max_concurrency })
}

fn validate_hook(
    definition: &WorkflowDefinition,
    hook: &HookDefinition,
    graph: &Graph<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Step> {
    let node = Node::Hook(hook);
    let name = &hook.name;
    if hook.timeout_ms == Some(0) {
        problems.push(Problem::hook(name, "timeout_ms", "must be greater than 0"));
    }
    if let Some(own) = &hook.retry {
        check_retry(own, Some(&node), problems);
    }
    let retry = hook.retry.clone().or_else(|| definition.retry.clone()).unwrap_or_default();
    let mut data = BTreeSet::new();
    let input = compile_template(&hook.input, Some(&node), "input", problems);
    if let Some(input) = &input {
        let at = Located { node: Some(&node), field: "input" };
        data.extend(graph.template_references(input, &at, false, problems));
    }
    let when = hook.when.as_ref().and_then(|source| {
        let at = Located { node: Some(&node), field: "when" };
        let expression = compile_expression(source, &at, problems)?;
        data.extend(graph.expression_references(&expression, &at, false, problems));
        Some(expression)
    });
    let mut dependencies = data.clone();
    dependencies.extend(graph.after(&node, &hook.after, problems));
    Some(Step {
        id: StepId::new(name),
        kind: StepKind::Hook,
        input: input?,
        dependencies: dependencies.into_iter().collect(),
        data_dependencies: data.into_iter().collect(),
        when,
        for_each: None,
        retry,
        timeout: hook.timeout_ms.map(Duration::from_millis),
        is_async: false,
        // A handler's permanent error is its veto: it always rolls back.
        on_permanent_failure: OnPermanentFailure::Fail,
    })
}

fn check_retry(retry: &RetryPolicy, node: Option<&Node<'_>>, problems: &mut Vec<Problem>) {
    let mut report = |field: &str, message: &str| match node {
        Some(node) => problems.push(node.problem(format!("retry.{field}"), message)),
        None => problems.push(Problem::workflow(Some(&format!("retry.{field}")), message)),
    };
    if retry.max_attempts == 0 {
        report("max_attempts", "must be at least 1");
    }
    if !(retry.multiplier.is_finite() && retry.multiplier >= 1.0) {
        report("multiplier", "must be a finite number >= 1.0");
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        report("initial_backoff_ms", "must not exceed max_backoff_ms");
    }
}

fn compile_template(
    value: &serde_json::Value,
    node: Option<&Node<'_>>,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Option<Template> {
    let at = Located { node, field };
    Template::compile(value)
        .map_err(|errors| {
            for error in errors {
                problems.push(at.problem(&error.path, error.message));
            }
        })
        .ok()
}
