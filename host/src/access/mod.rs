//! Who may do what through the HTTP API: the [`Scope`] of a principal (an
//! API token), what each scope allows, and the tokens themselves
//! ([`tokens`]: minting, hashing, parsing). The server asks a [`Principal`]
//! before each route does its work; the store only keeps token records.
//!
//! | scope        | read                    | start, events | complete, fail, cancel | upload plugins     | hosts, metrics |
//! |--------------|-------------------------|---------------|------------------------|--------------------|----------------|
//! | `admin`      | everything              | yes           | yes                    | any name           | yes            |
//! | `operator`   | everything              | no            | yes                    | no                 | yes            |
//! | `read`       | everything              | no            | no                     | no                 | yes            |
//! | `tenant:<id>`| its own executions only | as `<id>` only| its own executions     | names `<id>-...`   | no             |
//!
//! Workflows and plugins (definitions, not data) are listed to every scope.

pub mod tokens;

use std::fmt;
use std::str::FromStr;

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Read everything; complete, fail, cancel and retry any execution.
    Operator,
    /// Read everything.
    Read,
    /// Run workflows as this tenant; read, complete, fail and cancel only
    /// its own executions; upload plugins named `<tenant>-...`.
    Tenant(String),
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "admin" => Ok(Scope::Admin),
            "operator" => Ok(Scope::Operator),
            "read" => Ok(Scope::Read),
            _ => match text.strip_prefix("tenant:") {
                Some(tenant) if crate::tenants::is_valid_tenant(tenant) => Ok(Scope::Tenant(tenant.to_string())),
                Some(tenant) => Err(format!(
                    "`{tenant}` is not a valid tenant id (1-64 of a-z, 0-9, `_`, `-`, starting with a letter or digit)"
                )),
                None => Err(format!("unknown scope `{text}` (expected admin, operator, read or tenant:<id>)")),
            },
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Operator => f.write_str("operator"),
            Scope::Read => f.write_str("read"),
            Scope::Tenant(tenant) => write!(f, "tenant:{tenant}"),
        }
    }
}

/// Something a request does, as far as access is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read executions, workflows, plugins.
    Read,
    /// Read the hosts sharing the store and the metrics (every tenant's figures).
    Observe,
    /// Start executions (directly or by publishing an event).
    Start,
    /// Complete, fail, cancel or retry an execution.
    Operate,
    /// Upload a plugin.
    Upload,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Observe => "read hosts and metrics",
            Action::Start => "start executions",
            Action::Operate => "complete, fail, cancel or retry executions",
            Action::Upload => "upload plugins",
        }
    }
}

/// Who is asking: the scope of the token presented, and which token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// What it may do.
    pub scope: Scope,
    /// The token's id (`env` for the admin token from the environment,
    /// `no-auth` when the server runs without authentication).
    pub token_id: String,
}

/// Why a principal may not do something (answered 403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Principal {
    /// The principal of a server running with `--no-auth`: everything is allowed.
    pub fn unauthenticated_admin() -> Self {
        Principal { scope: Scope::Admin, token_id: "no-auth".into() }
    }

    /// Whether the scope allows `action` at all (for some execution or plugin).
    pub fn may(&self, action: Action) -> Result<(), Denied> {
        let allowed = matches!(
            (&self.scope, action),
            (Scope::Admin, _)
                | (Scope::Operator, Action::Read | Action::Observe | Action::Operate)
                | (Scope::Read, Action::Read | Action::Observe)
                | (Scope::Tenant(_), Action::Read | Action::Start | Action::Operate | Action::Upload)
        );
        if allowed {
            Ok(())
        } else {
            Err(Denied(format!("a token with scope `{}` may not {}", self.scope, action.describe())))
        }
    }

    /// Whether an execution of `tenant` is visible to this principal. A
    /// tenant sees only its own; asked about another's, the API answers 404,
    /// as if it did not exist.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        match &self.scope {
            Scope::Tenant(own) => tenant == Some(own.as_str()),
            _ => true,
        }
    }

    /// The tenant executions started by this principal run for: a tenant
    /// token runs them as itself (naming another tenant is refused); other
    /// scopes run them as requested.
    pub fn tenant_to_run_as(&self, requested: Option<String>) -> Result<Option<String>, Denied> {
        match (&self.scope, requested) {
            (Scope::Tenant(own), None) => Ok(Some(own.clone())),
            (Scope::Tenant(own), Some(requested)) if requested == *own => Ok(Some(requested)),
            (Scope::Tenant(own), Some(requested)) => {
                Err(Denied(format!("a token of tenant `{own}` may not run executions as tenant `{requested}`")))
            }
            (_, requested) => Ok(requested),
        }
    }

    /// Only the tenant executions may be listed for: its own for a tenant
    /// token, none (every execution) otherwise.
    pub fn tenant_filter(&self) -> Option<&str> {
        match &self.scope {
            Scope::Tenant(own) => Some(own),
            _ => None,
        }
    }

    /// Whether this principal may upload (and so replace) the workflow
    /// `name`: the same scopes as plugins, a tenant under its own prefix.
    pub fn may_upload_workflow(&self, name: &str) -> Result<(), Denied> {
        self.may_upload_named("workflows", name)
    }

    /// Whether this principal may upload (and so replace) the plugin `name`:
    /// an admin any, a tenant only `<tenant>-...`.
    pub fn may_upload(&self, name: &str) -> Result<(), Denied> {
        self.may_upload_named("plugins", name)
    }

    /// Uploads of `what` (plugins, workflows): a tenant's under its own prefix.
    fn may_upload_named(&self, what: &str, name: &str) -> Result<(), Denied> {
        self.may(Action::Upload)?;
        match &self.scope {
            Scope::Tenant(own) if !name.starts_with(&format!("{own}-")) => {
                Err(Denied(format!("a token of tenant `{own}` may only upload {what} named `{own}-...`, not `{name}`")))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scope: &str) -> Principal {
        Principal { scope: scope.parse().unwrap(), token_id: "t".into() }
    }

    #[test]
    fn scopes_parse_and_print_back() {
        for text in ["admin", "operator", "read", "tenant:acme", "tenant:0-shop_1"] {
            assert_eq!(text.parse::<Scope>().unwrap().to_string(), text);
        }
        assert!("root".parse::<Scope>().unwrap_err().contains("unknown scope `root`"));
        assert!("tenant:".parse::<Scope>().is_err());
        assert!("tenant:Acme".parse::<Scope>().unwrap_err().contains("not a valid tenant id"));
        assert!("tenant:a/b".parse::<Scope>().is_err());
    }

    #[test]
    fn each_scope_allows_what_the_table_says() {
        use Action::*;
        let table: [(&str, [bool; 5]); 4] = [
            ("admin", [true, true, true, true, true]),
            ("operator", [true, true, false, true, false]),
            ("read", [true, true, false, false, false]),
            ("tenant:acme", [true, false, true, true, true]),
        ];
        for (scope, allowed) in table {
            for (action, allowed) in [Read, Observe, Start, Operate, Upload].into_iter().zip(allowed) {
                assert_eq!(principal(scope).may(action).is_ok(), allowed, "{scope} {action:?}");
            }
        }
        let denied = principal("read").may(Start).unwrap_err();
        assert_eq!(denied.0, "a token with scope `read` may not start executions");
    }

    #[test]
    fn a_tenant_sees_and_runs_only_as_itself() {
        let acme = principal("tenant:acme");
        assert!(acme.sees(Some("acme")));
        assert!(!acme.sees(Some("globex")));
        assert!(!acme.sees(None), "executions without a tenant belong to the platform");
        assert_eq!(acme.tenant_to_run_as(None).unwrap().as_deref(), Some("acme"));
        assert_eq!(acme.tenant_to_run_as(Some("acme".into())).unwrap().as_deref(), Some("acme"));
        assert!(acme.tenant_to_run_as(Some("globex".into())).is_err());
        assert_eq!(acme.tenant_filter(), Some("acme"));
        let admin = principal("admin");
        assert!(admin.sees(Some("globex")) && admin.sees(None));
        assert_eq!(admin.tenant_to_run_as(Some("globex".into())).unwrap().as_deref(), Some("globex"));
        assert_eq!(admin.tenant_filter(), None);
    }

    #[test]
    fn a_tenant_uploads_only_under_its_prefix() {
        let acme = principal("tenant:acme");
        assert!(acme.may_upload("acme-discount").is_ok());
        assert!(acme.may_upload("acmediscount").is_err());
        assert!(acme.may_upload("reserve-inventory").unwrap_err().0.contains("named `acme-...`"));
        assert!(principal("admin").may_upload("reserve-inventory").is_ok());
        assert!(principal("operator").may_upload("anything").is_err());
    }
}
