//! Domain newtypes: session ids, stream and event ids.

use std::fmt;

use base64::Engine as _;
use rand::Rng as _;

/// Who a session belongs to: the principal that initialized it. Every later request of the
/// session must come from the same one; anyone else is told the session does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// Who vouched for the subject: an OAuth issuer, `api-key` or `anonymous`.
    pub issuer: String,
    /// The subject within that issuer.
    pub subject: String,
}

/// A session id: 32 random bytes, base64url without padding (43 visible-ASCII characters, 256
/// bits of entropy). Never derived from anything guessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh cryptographically random id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accept a client-supplied id only if it has the shape of ours; anything else cannot name a
    /// session, so callers answer 404 without touching the store.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 43
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stream of a session. Stream 0 is the standalone GET stream; POST streams count up from 1.
pub type StreamId = u64;

/// The standalone (GET) stream of every session.
pub const GET_STREAM: StreamId = 0;

/// An SSE event id as the client sees it: `<stream>_<entry>` where `<entry>` is the store's
/// monotonically increasing entry id within that stream (`<ms>-<seq>` in Redis). The stream
/// number lets a `Last-Event-ID` name exactly one stream of the session it is presented on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId {
    /// The stream this event belongs to.
    pub stream: StreamId,
    /// The entry id within the stream (`0-0` = before the first entry).
    pub entry: String,
}

impl EventId {
    /// The id that precedes every entry of a stream (used by priming events).
    pub fn start(stream: StreamId) -> Self {
        Self {
            stream,
            entry: "0-0".into(),
        }
    }

    /// Parse a `Last-Event-ID` value.
    pub fn parse(raw: &str) -> Option<Self> {
        let (stream, entry) = raw.split_once('_')?;
        let stream = stream.parse().ok()?;
        let (ms, seq) = entry.split_once('-')?;
        ms.parse::<u64>().ok()?;
        seq.parse::<u64>().ok()?;
        Some(Self {
            stream,
            entry: entry.to_owned(),
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.stream, self.entry)
    }
}

/// Compare two entry ids (`<ms>-<seq>`) numerically.
pub fn entry_key(entry: &str) -> (u64, u64) {
    let (a, b) = entry.split_once('-').unwrap_or((entry, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_random_and_visible_ascii() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().bytes().all(|c| (0x21..=0x7e).contains(&c)));
        assert_eq!(SessionId::parse(a.as_str()), Some(a));
        assert_eq!(SessionId::parse("short"), None);
        assert_eq!(SessionId::parse(&"!".repeat(43)), None);
    }

    #[test]
    fn event_ids_round_trip() {
        let e = EventId {
            stream: 3,
            entry: "1700-2".into(),
        };
        assert_eq!(EventId::parse(&e.to_string()), Some(e));
        assert_eq!(EventId::parse("x_1-2"), None);
        assert_eq!(EventId::parse("3_abc"), None);
        assert!(entry_key("10-1") > entry_key("9-5"));
    }
}
