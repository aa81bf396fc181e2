//! Authorization as the session actor sees it: who asks ([`Access`]) and a tenant's
//! [`Authorizer`]. The casbin implementation lives in `marina-policy`; the actor only asks.

/// Who asks, for one request: the seeds of its role set — its subject and the roles its
/// credential carries (the tenant's policy may link both to further roles).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// The principal's subject (`anonymous` on a tenant without authentication).
    pub subject: String,
    /// Roles from the credential, sorted and without duplicates.
    pub roles: Vec<String>,
}

impl Access {
    /// Access of `subject` with `roles` (normalised: sorted, deduplicated).
    pub fn new(subject: impl Into<String>, mut roles: Vec<String>) -> Self {
        roles.sort();
        roles.dedup();
        Self {
            subject: subject.into(),
            roles,
        }
    }
}

/// What a tenant lets whom do. Objects are `tool:<published name>` (action `call`),
/// `resource:<uri>` (`read`) and `prompt:<name>` (`get`).
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// May `who` do `action` on `object`?
    fn allows(&self, who: &Access, object: &str, action: &str) -> bool;

    /// Does `who` hold `role`, from its credential or through the policy's role links?
    fn holds_role(&self, who: &Access, role: &str) -> bool {
        who.roles.iter().any(|r| r == role)
    }
}

/// Does `text` match `pattern`, where `*` matches any run of characters (including none)?
/// Iterative with backtracking to the last `*`: linear-ish, no recursion, never panics.
pub fn glob_match(text: &str, pattern: &str) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Actions.
pub mod action {
    /// Call a tool.
    pub const CALL: &str = "call";
    /// Read (or subscribe to) a resource.
    pub const READ: &str = "read";
    /// Get (or complete) a prompt.
    pub const GET: &str = "get";
}
