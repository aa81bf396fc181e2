//! Tool arguments checked against the tool's `inputSchema` before any upstream sees them. Each
//! distinct schema is compiled once (a tenant's cache, keyed by the schema's digest), not per call;
//! remote `$ref`s are never fetched (the `jsonschema` crate is built without retrieval).
//!
//! The digest is on every call's path, so it is streamed, not built: the schema is serialized
//! straight into two SipHash hashers with this cache's own random keys (128 bits). Nobody outside
//! the process knows the keys, so an upstream cannot craft a schema whose digest collides with
//! another tool's to borrow its validator — what a cryptographic digest of the text would also
//! give, at several times the cost (it was ~3 % of a proxied call's CPU).

use std::hash::{BuildHasher as _, Hasher};
use std::sync::Arc;

use serde_json::Value;

/// Problems reported per call, at most.
const MAX_PROBLEMS: usize = 5;
/// Compiled schemas kept per tenant.
const CACHE: u64 = 10_000;

/// A tenant's compiled input schemas.
pub struct ArgumentCheck {
    compiled: moka::sync::Cache<(u64, u64), Option<Arc<jsonschema::Validator>>>,
    keys: (std::hash::RandomState, std::hash::RandomState),
}

impl Default for ArgumentCheck {
    fn default() -> Self {
        Self {
            compiled: moka::sync::Cache::new(CACHE),
            keys: (std::hash::RandomState::new(), std::hash::RandomState::new()),
        }
    }
}

/// Bytes written to it go to both hashers.
struct Digest<H>(H, H);

impl<H: Hasher> std::io::Write for Digest<H> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        self.1.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for ArgumentCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgumentCheck")
            .field("schemas", &self.compiled.entry_count())
            .finish()
    }
}

/// Why arguments cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// They do not satisfy the schema (up to five problems, with their JSON pointers).
    Arguments(Vec<String>),
    /// The tool's schema itself cannot be compiled: nothing can be checked, so nothing passes.
    Schema,
}

impl ArgumentCheck {
    /// Check `args` against `schema`.
    pub fn check(&self, schema: &Value, args: &Value) -> Result<(), Invalid> {
        let mut digest = Digest(self.keys.0.build_hasher(), self.keys.1.build_hasher());
        // Writing into hashers cannot fail, nor can serializing a `Value`.
        let _ = serde_json::to_writer(&mut digest, schema);
        let key = (digest.0.finish(), digest.1.finish());
        let validator = self
            .compiled
            .get_with(key, || jsonschema::validator_for(schema).ok().map(Arc::new))
            .ok_or(Invalid::Schema)?;
        let found = problems(&validator, args);
        if found.is_empty() {
            Ok(())
        } else {
            Err(Invalid::Arguments(found))
        }
    }
}

/// Up to five ways `value` fails `validator`, each with the JSON pointer where it fails.
pub fn problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .take(MAX_PROBLEMS)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_checked_and_schemas_compiled_once() {
        let c = ArgumentCheck::default();
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}, "required": ["n"]});
        assert_eq!(c.check(&schema, &json!({"n": 2})), Ok(()));
        let Err(Invalid::Arguments(p)) = c.check(&schema, &json!({"n": 9})) else {
            panic!("9 > 3")
        };
        assert!(p[0].starts_with("/n:"), "{p:?}");
        assert!(matches!(c.check(&schema, &json!({})), Err(Invalid::Arguments(_))));
        c.compiled.run_pending_tasks();
        assert_eq!(c.compiled.entry_count(), 1);
        assert_eq!(c.check(&json!({"type": 12}), &json!({})), Err(Invalid::Schema));
    }

    #[test]
    fn remote_refs_are_not_fetched() {
        let c = ArgumentCheck::default();
        let schema = json!({"$ref": "http://169.254.169.254/latest/meta-data/schema.json"});
        assert_eq!(c.check(&schema, &json!({})), Err(Invalid::Schema));
    }
}
