//! Who is who in the consumer group, for the inbox's customer page: each
//! instance announces its `http.advertised_url` and the input partitions
//! it owns on `kafka.instances_topic` (compacted, keyed by instance, a
//! tombstone when it stops), and every instance reads them all. A customer
//! page asked of an instance that does not hold the customer asks the
//! others whether they do and sends the browser there.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::engine::event::Ts;

/// How often an instance announces itself; one not heard of for three
/// times this is taken as gone.
pub const EVERY: Duration = Duration::from_secs(10);

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

/// The announcements heard.
#[derive(Debug, Default)]
pub struct Instances {
    heard: RwLock<HashMap<String, Announcement>>,
}

impl Instances {
    /// Takes in a record: an announcement, or a tombstone (`None`) for `key`.
    pub fn heard(&self, key: &str, announcement: Option<Announcement>) {
        let mut h = self.heard.write();
        match announcement {
            Some(a) => {
                h.insert(key.to_string(), a);
            }
            None => {
                h.remove(key);
            }
        }
    }

    /// The other instances heard of recently, by instance.
    pub fn others(&self, me: &str, now: Ts) -> Vec<Announcement> {
        let fresh = now.0 - 3 * EVERY.as_millis() as i64;
        let mut v: Vec<Announcement> = self
            .heard
            .read()
            .values()
            .filter(|a| a.instance != me && a.at.0 >= fresh)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.instance.cmp(&b.instance));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(instance: &str, at: i64) -> Announcement {
        Announcement {
            instance: instance.into(),
            url: format!("http://{instance}"),
            partitions: vec![0],
            at: Ts(at),
        }
    }

    #[test]
    fn others_are_the_fresh_announcements_but_mine() {
        let i = Instances::default();
        let now = 100_000;
        i.heard("me", Some(a("me", now)));
        i.heard("b", Some(a("b", now - 1000)));
        i.heard("old", Some(a("old", now - 31_000)));
        i.heard("gone", Some(a("gone", now)));
        i.heard("gone", None);
        let names: Vec<String> = i
            .others("me", Ts(now))
            .into_iter()
            .map(|a| a.instance)
            .collect();
        assert_eq!(names, ["b"]);
    }
}
