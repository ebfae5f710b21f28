//! Who is who in the consumer group, for the inbox's customer page: each
//! instance announces its `http.advertised_url` and the input partitions
//! it owns on `kafka.instances_topic` (compacted, keyed by instance, a
//! tombstone when it stops), and every instance reads them all. A customer
//! page asked of an instance that does not hold the customer asks the
//! others whether they do and sends the browser there.
//!
//! Trust comes from configuration, never from the topic: anyone who can
//! write to it could name any address, so only announcements naming one of
//! `http.peers` are taken, and what is asked and redirected to is the
//! configured peer's address, not the announced one.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::engine::event::Ts;

/// How often an instance announces itself; one not heard of for three
/// times this is taken as gone.
pub const EVERY: Duration = Duration::from_secs(10);

/// How far ahead of this instance's clock an announcement may be dated
/// (clock skew between hosts); later ones are not fresh but forged or
/// from a broken clock, and would otherwise stay "fresh" for ever.
pub const SKEW: Duration = Duration::from_secs(30);

/// One instance's announcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// The instance (the record's key).
    pub instance: String,
    /// Where its data listener is reached.
    pub url: String,
    /// The input partitions it owns.
    pub partitions: Vec<i32>,
    /// When it said so.
    pub at: Ts,
}

/// What became of a record of the instances topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Taken in (or, for a tombstone, the instance forgotten).
    Taken,
    /// It names an address that is not one of `http.peers`: ignored.
    Untrusted,
}

/// A peer heard of: its configured address and what it announced.
#[derive(Debug, Clone)]
struct Peer {
    base: url::Url,
    at: Ts,
}

/// The announcements heard from configured peers.
#[derive(Debug, Default)]
pub struct Instances {
    /// `http.peers`, by origin (`scheme://host:port`).
    peers: HashMap<String, url::Url>,
    heard: RwLock<HashMap<String, Peer>>,
}

/// The origin an address is compared by (scheme, host, port with the
/// scheme's default filled in), so `https://a` and `https://a:443/` match.
fn origin(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

impl Instances {
    /// Instances trusting exactly `peers` (each an http(s) URL).
    pub fn new(peers: &[url::Url]) -> Self {
        Self {
            peers: peers.iter().map(|u| (origin(u), u.clone())).collect(),
            heard: RwLock::default(),
        }
    }

    /// Takes in a record: an announcement, or a tombstone (`None`) for `key`.
    /// An announcement naming an address outside `http.peers` changes nothing.
    pub fn heard(&self, key: &str, announcement: Option<Announcement>) -> Heard {
        let Some(a) = announcement else {
            self.heard.write().remove(key);
            return Heard::Taken;
        };
        let trusted = url::Url::parse(&a.url)
            .ok()
            .and_then(|u| self.peers.get(&origin(&u)));
        match trusted {
            Some(base) => {
                self.heard.write().insert(
                    key.to_string(),
                    Peer {
                        base: base.clone(),
                        at: a.at,
                    },
                );
                Heard::Taken
            }
            None => Heard::Untrusted,
        }
    }

    /// The configured addresses of the other instances heard of recently
    /// (announced within three announcement periods, and not dated beyond
    /// [`SKEW`] ahead of `now`), by instance.
    pub fn others(&self, me: &str, now: Ts) -> Vec<url::Url> {
        let fresh = now.0 - 3 * EVERY.as_millis() as i64;
        let ahead = now.0 + SKEW.as_millis() as i64;
        let mut v: Vec<(String, url::Url)> = self
            .heard
            .read()
            .iter()
            .filter(|(instance, p)| *instance != me && (fresh..=ahead).contains(&p.at.0))
            .map(|(instance, p)| (instance.clone(), p.base.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, u)| u).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(instance: &str, url: &str, at: i64) -> Announcement {
        Announcement {
            instance: instance.into(),
            url: url.into(),
            partitions: vec![0],
            at: Ts(at),
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn others_are_the_fresh_announcements_of_configured_peers_but_mine() {
        let i = Instances::new(&[url("https://cw-b:9898"), url("https://cw-me")]);
        let now = 100_000;
        assert_eq!(
            i.heard("me", Some(a("me", "https://cw-me:443/", now))),
            Heard::Taken
        );
        i.heard("b", Some(a("b", "https://cw-b:9898/x", now - 1000)));
        i.heard("old", Some(a("old", "https://cw-b:9898", now - 31_000)));
        i.heard("gone", Some(a("gone", "https://cw-b:9898", now)));
        i.heard("gone", None);
        assert_eq!(i.others("me", Ts(now)), [url("https://cw-b:9898")]);
    }

    #[test]
    fn an_announcement_of_another_address_or_from_the_future_changes_nothing() {
        let i = Instances::new(&[url("https://cw-b:9898")]);
        let now = 100_000;
        for forged in ["http://attacker.example", "https://cw-b:9899", "not a url"] {
            assert_eq!(
                i.heard("x", Some(a("x", forged, now))),
                Heard::Untrusted,
                "{forged}"
            );
        }
        i.heard(
            "future",
            Some(a("future", "https://cw-b:9898", 4_102_444_800_000)),
        );
        assert!(i.others("me", Ts(now)).is_empty());
        let nobody = Instances::new(&[]);
        assert_eq!(
            nobody.heard("b", Some(a("b", "https://cw-b:9898", now))),
            Heard::Untrusted,
            "without http.peers nobody is trusted"
        );
    }
}
