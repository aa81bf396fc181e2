//! Authorization per tenant: one casbin enforcer per tenant running `policies/model.conf`, loaded
//! with that tenant's policy lines only (the tenant is the domain), a decision cache in front of
//! it, and explanations of decisions.
//!
//! casbin scans every rule on every check, evaluating the matcher in a script engine, so checks
//! cost tens of microseconds per hundred rules: the request path only ever asks the cache, keyed
//! by (subject, roles, object, action) and dropped with the policy it belongs to.

mod decisions;
pub mod table;

use std::collections::{HashMap, HashSet, VecDeque};

use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, EnforceContext, Enforcer, MemoryAdapter, MgmtApi};
use marina_core::access::{Access, Authorizer, action};

/// The model every tenant's policy runs under.
pub const MODEL: &str = include_str!("../../../policies/model.conf");
/// Decisions kept per tenant.
const DECISION_CACHE: usize = 100_000;

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A line of the policy is malformed.
    #[error("policy line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// casbin refused the model or the rules.
    #[error("policy: {0}")]
    Casbin(#[from] casbin::Error),
}

/// One rule: `p, subject, object, action, effect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Subject or role it applies to.
    pub subject: String,
    /// Object glob.
    pub object: String,
    /// Action.
    pub action: String,
    /// `allow` or `deny`.
    pub effect: String,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p, {}, {}, {}, {}",
            self.subject, self.object, self.action, self.effect
        )
    }
}

/// A policy, parsed and checked line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `p` lines.
    pub rules: Vec<Rule>,
    /// `g` lines: (member, role).
    pub links: Vec<(String, String)>,
}

const OBJECT_KINDS: [(&str, &str); 3] = [
    ("tool:", action::CALL),
    ("resource:", action::READ),
    ("prompt:", action::GET),
];

impl Policy {
    /// Parse policy text: `p, sub, obj, act, allow|deny` and `g, member, role` lines; blank lines
    /// and `#` comments are skipped. Every line is checked (object kinds, their actions,
    /// effects), so a typo is an error, not a rule that silently never matches.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut p = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| PolicyError::Line { line: i + 1, why };
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.iter().any(|x| x.is_empty()) {
                return Err(bad("empty field".into()));
            }
            match f[0] {
                "p" => {
                    let [_, sub, obj, act, eft] = f[..] else {
                        return Err(bad(
                            "a rule is `p, <subject>, <object>, <action>, allow|deny`".into()
                        ));
                    };
                    let Some((_, expected)) = OBJECT_KINDS.iter().find(|(k, _)| obj.starts_with(k)) else {
                        return Err(bad(format!(
                            "object {obj:?} must start with tool:, resource: or prompt:"
                        )));
                    };
                    if act != *expected {
                        return Err(bad(format!("the action on {obj:?} is {expected:?}")));
                    }
                    if eft != "allow" && eft != "deny" {
                        return Err(bad(format!("effect {eft:?} must be allow or deny")));
                    }
                    p.rules.push(Rule {
                        subject: sub.into(),
                        object: obj.into(),
                        action: act.into(),
                        effect: eft.into(),
                    });
                }
                "g" => {
                    let [_, member, role] = f[..] else {
                        return Err(bad("a role link is `g, <subject or role>, <role>`".into()));
                    };
                    p.links.push((member.into(), role.into()));
                }
                other => return Err(bad(format!("unknown line type {other:?} (p or g)"))),
            }
        }
        Ok(p)
    }
}

pub use marina_core::access::glob_match;

fn obj_match(a: Dynamic, b: Dynamic) -> Dynamic {
    let (Ok(text), Ok(pattern)) = (a.into_immutable_string(), b.into_immutable_string()) else {
        return false.into();
    };
    glob_match(&text, &pattern).into()
}

/// How a decision came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Allowed?
    pub allowed: bool,
    /// The rule that decided: the deny that matched, else an allow that matched; none when
    /// nothing matched (default deny).
    pub rule: Option<Rule>,
    /// From the seed (subject or credential role) to the rule's subject, through `g` links.
    pub chain: Vec<String>,
}

/// One tenant's policy, ready to answer.
pub struct TenantPolicy {
    enforcer: Enforcer,
    policy: Policy,
    decisions: decisions::Decisions,
}

impl std::fmt::Debug for TenantPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPolicy")
            .field("rules", &self.policy.rules.len())
            .field("links", &self.policy.links.len())
            .finish_non_exhaustive()
    }
}

impl TenantPolicy {
    /// Load policy text into a fresh enforcer.
    pub async fn new(text: &str) -> Result<Self, PolicyError> {
        let policy = Policy::parse(text)?;
        let model = DefaultModel::from_str(MODEL).await?;
        let mut enforcer = Enforcer::new(model, MemoryAdapter::default()).await?;
        enforcer.add_function("objMatch", OperatorFunction::Arg2(obj_match));
        let rules: Vec<Vec<String>> = policy
            .rules
            .iter()
            .map(|r| {
                vec![
                    r.subject.clone(),
                    r.object.clone(),
                    r.action.clone(),
                    r.effect.clone(),
                ]
            })
            .collect();
        if !rules.is_empty() {
            enforcer.add_policies(rules).await?;
        }
        let links: Vec<Vec<String>> = policy
            .links
            .iter()
            .map(|(m, r)| vec![m.clone(), r.clone()])
            .collect();
        if !links.is_empty() {
            enforcer.add_grouping_policies(links).await?;
        }
        Ok(Self {
            enforcer,
            policy,
            decisions: decisions::Decisions::new(DECISION_CACHE),
        })
    }

    /// The parsed policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn seeds(who: &Access) -> impl Iterator<Item = &str> {
        std::iter::once(who.subject.as_str()).chain(who.roles.iter().map(String::as_str))
    }

    /// Decide without the cache: some seed allowed and no seed denied. A casbin error denies.
    fn evaluate(&self, who: &Access, object: &str, action: &str) -> bool {
        // The same rules and matcher under the second effect: false when a deny matches.
        let deny_effect = || EnforceContext {
            r_type: "r".into(),
            p_type: "p".into(),
            e_type: "e2".into(),
            m_type: "m".into(),
        };
        let mut allowed = false;
        for seed in Self::seeds(who) {
            let not_denied = self
                .enforcer
                .enforce_with_context(deny_effect(), (seed, object, action))
                .unwrap_or(false);
            if !not_denied {
                return false;
            }
            allowed = allowed || self.enforcer.enforce((seed, object, action)).unwrap_or(false);
        }
        allowed
    }

    /// Explain a decision: the deciding rule and the role chain that led to it.
    pub fn explain(&self, who: &Access, object: &str, action: &str) -> Explanation {
        let mut allow: Option<Explanation> = None;
        for seed in Self::seeds(who) {
            let paths = self.role_paths(seed);
            for rule in &self.policy.rules {
                if rule.action != action || !glob_match(object, &rule.object) {
                    continue;
                }
                let Some(chain) = paths.get(rule.subject.as_str()) else {
                    continue;
                };
                let found = Explanation {
                    allowed: rule.effect == "allow",
                    rule: Some(rule.clone()),
                    chain: chain.clone(),
                };
                if rule.effect == "deny" {
                    return found;
                }
                allow.get_or_insert(found);
            }
        }
        allow.unwrap_or(Explanation {
            allowed: false,
            rule: None,
            chain: Vec::new(),
        })
    }

    /// Every name reachable from `seed` through `g` links, with the path to it (BFS: shortest).
    fn role_paths(&self, seed: &str) -> HashMap<String, Vec<String>> {
        let mut paths = HashMap::from([(seed.to_owned(), vec![seed.to_owned()])]);
        let mut queue = VecDeque::from([seed.to_owned()]);
        let mut seen = HashSet::from([seed.to_owned()]);
        while let Some(name) = queue.pop_front() {
            let here = paths[&name].clone();
            for (member, role) in &self.policy.links {
                if member == &name && seen.insert(role.clone()) {
                    let mut p = here.clone();
                    p.push(role.clone());
                    paths.insert(role.clone(), p);
                    queue.push_back(role.clone());
                }
            }
        }
        paths
    }
}

impl Authorizer for TenantPolicy {
    fn allows(&self, who: &Access, object: &str, action: &str) -> bool {
        self.decisions
            .get_or(who, object, action, || self.evaluate(who, object, action))
    }

    fn holds_role(&self, who: &Access, role: &str) -> bool {
        Self::seeds(who).any(|seed| seed == role || self.role_paths(seed).contains_key(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_POLICY: &str = "
        p, viewer, tool:echo, call, allow
        p, viewer, resource:*, read, allow
        p, operator, tool:*, call, allow
        p, operator, tool:admin_*, call, deny
        g, operator, viewer
        g, admin, operator
        g, alice, admin
    ";

    #[tokio::test]
    async fn roles_are_held_through_links_and_credentials() {
        let p = TenantPolicy::new(ISSUE_POLICY).await.unwrap();
        assert!(
            p.holds_role(&who("alice", &[]), "viewer"),
            "alice → admin → operator → viewer"
        );
        assert!(p.holds_role(&who("bob", &["operator"]), "viewer"));
        assert!(p.holds_role(&who("bob", &["tenant-admin"]), "tenant-admin"));
        assert!(
            !p.holds_role(&who("bob", &["viewer"]), "operator"),
            "links go one way"
        );
        assert!(!p.holds_role(&who("carol", &[]), "viewer"));
    }

    fn who(subject: &str, roles: &[&str]) -> Access {
        Access::new(subject, roles.iter().map(|r| (*r).to_owned()).collect())
    }

    #[test]
    fn globs_match_any_run_of_characters_and_never_panic() {
        assert!(glob_match("tool:admin_reset", "tool:admin_*"));
        assert!(glob_match("tool:x", "tool:*"));
        assert!(glob_match("tool:", "tool:*"));
        assert!(!glob_match("tool:x", "tool:y*"));
        assert!(glob_match("resource:file:///a/b.txt", "resource:file:///*.txt"));
        assert!(glob_match("tool:é-ü", "tool:é*"));
        assert!(!glob_match("tool:é", "tool:e*"));
        assert!(glob_match("anything", "*"));
        assert!(glob_match("a*b", "a*b"));
        assert!(!glob_match("tool:echo2", "tool:echo"));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("p, viewer, tool:echo, call", 1),
            ("\np, viewer, tool:echo, read, allow", 2),
            ("p, viewer, file:x, read, allow", 1),
            ("p, viewer, tool:echo, call, maybe", 1),
            ("g, a", 1),
            ("x, a, b", 1),
            ("p, , tool:x, call, allow", 1),
        ] {
            match Policy::parse(text) {
                Err(PolicyError::Line { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(Policy::parse("# comment\n\np, a, prompt:x, get, allow").is_ok());
    }

    #[tokio::test]
    async fn hierarchy_globs_and_deny_over_allow() {
        let p = TenantPolicy::new(ISSUE_POLICY).await.unwrap();
        let cases = [
            (who("bob", &["viewer"]), "tool:echo", "call", true),
            (who("bob", &["viewer"]), "tool:add", "call", false),
            (who("bob", &["viewer"]), "resource:file:///x", "read", true),
            (who("bob", &["operator"]), "tool:add", "call", true),
            (who("bob", &["operator"]), "tool:admin_reset", "call", false),
            (who("bob", &["operator"]), "resource:file:///x", "read", true),
            // alice → admin → operator → viewer, through g lines naming the subject.
            (who("alice", &[]), "tool:add", "call", true),
            (who("alice", &[]), "tool:admin_reset", "call", false),
            (who("alice", &[]), "resource:x", "read", true),
            // Deny wins across seeds: viewer allows echo, operator denies admin_*.
            (
                who("carol", &["viewer", "operator"]),
                "tool:admin_x",
                "call",
                false,
            ),
            (who("nobody", &[]), "tool:echo", "call", false),
            (who("bob", &["viewer"]), "prompt:p", "get", false),
        ];
        for (w, obj, act, want) in cases {
            assert_eq!(p.allows(&w, obj, act), want, "{w:?} {obj} {act}");
            assert_eq!(p.allows(&w, obj, act), want, "cached: {w:?} {obj} {act}");
            let ex = p.explain(&w, obj, act);
            assert_eq!(ex.allowed, want, "explain agrees: {w:?} {obj} {act}: {ex:?}");
        }
        let ex = p.explain(&who("alice", &[]), "tool:admin_reset", "call");
        assert_eq!(
            ex.rule.unwrap().to_string(),
            "p, operator, tool:admin_*, call, deny"
        );
        assert_eq!(ex.chain, ["alice", "admin", "operator"]);
        let ex = p.explain(&who("nobody", &[]), "tool:echo", "call");
        assert_eq!((ex.allowed, ex.rule, ex.chain.len()), (false, None, 0));
    }
}
