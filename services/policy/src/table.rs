//! Decision tables: rows of (subject, roles, object, action) with the expected decision, checked
//! against a policy. The repo's own tables (`policies/tests/`) run in CI; operators run theirs
//! with `marina policy test`.

use marina_core::access::Access;
use serde::Deserialize;

use crate::{Explanation, PolicyError, TenantPolicy};

/// A decision table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The tenant whose configured policy the rows are checked against (when `policy` is absent).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The policy lines, if the table carries its own.
    #[serde(default)]
    pub policy: Option<String>,
    /// Expected decisions.
    pub rows: Vec<Row>,
}

/// One expected decision.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// The principal's subject.
    pub subject: String,
    /// Roles its credential carries.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `tool:<name>`, `resource:<uri>` or `prompt:<name>`.
    pub object: String,
    /// `call`, `read` or `get`.
    pub action: String,
    /// Expected decision.
    pub allow: bool,
}

impl Row {
    /// The access this row describes.
    pub fn access(&self) -> Access {
        Access::new(self.subject.clone(), self.roles.clone())
    }
}

/// A row whose decision differs from the table's.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// 1-based row number.
    pub index: usize,
    /// The row.
    pub row: Row,
    /// What the policy decided, and why.
    pub got: Explanation,
}

impl Table {
    /// Parse a YAML table.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    /// Check every row against `policy`; the rows that disagree.
    pub async fn check(&self, policy: &str) -> Result<Vec<Mismatch>, PolicyError> {
        let p = TenantPolicy::new(policy).await?;
        Ok(self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let got = p.explain(&row.access(), &row.object, &row.action);
                let decided =
                    marina_core::access::Authorizer::allows(&p, &row.access(), &row.object, &row.action);
                (decided != row.allow || got.allowed != row.allow).then(|| Mismatch {
                    index: i + 1,
                    row: row.clone(),
                    got,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table in `policies/tests/` carries its policy and holds.
    #[tokio::test]
    async fn the_repository_policy_tables_hold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/tests");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let table = Table::from_yaml(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let policy = table
                .policy
                .clone()
                .expect("repository tables carry their policy");
            let bad = table.check(&policy).await.unwrap();
            assert!(bad.is_empty(), "{}: {bad:#?}", path.display());
            assert!(
                table.rows.len() >= 5,
                "{}: a table worth its name",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 1, "no tables found in {}", dir.display());
    }

    #[tokio::test]
    async fn a_wrong_expectation_is_reported_with_its_row() {
        let t = Table::from_yaml(
            "rows:\n  - {subject: a, object: 'tool:x', action: call, allow: true}\n  - {subject: a, object: 'tool:x', action: call, allow: false}\n",
        )
        .unwrap();
        let bad = t.check("p, a, tool:x, call, allow").await.unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].index, 2);
        assert!(bad[0].got.allowed);
    }
}
