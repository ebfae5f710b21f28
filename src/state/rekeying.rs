//! How far the re-keying task got, kept in `state.dir`: per source
//! partition, the last offset whose republished record (or dead letter) the
//! broker acknowledged, and per repartition partition the offset past the
//! last acknowledged republish (first written before anything is
//! republished). Offsets are committed to the group once per batch, so
//! after a crash the group's committed offset is behind what was already
//! republished; a restart on the same disk reads this file, reads the
//! repartition topic back from the recorded positions (what landed while
//! unacknowledged when the process died), and skips all of it rather than
//! republishing it again (tansu, like many brokers, has no transactions to
//! make the republish and the commit one step).
//!
//! The file is advisory: written after the acknowledgement (never ahead of
//! it) and replaced atomically, but not synced, so a power cut may leave an
//! older or unreadable file, which only means republishing (and
//! de-duplicating) more. Acknowledged offsets are skipped only from the
//! group's committed offset up to the recorded one, and only where the
//! group has a committed offset; a record read back is skipped only where
//! the source record at its offset has its payload. So a file of another
//! group, or of a topic since recreated, skips nothing the group has not
//! consumed.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in `state.dir`.
const FILE: &str = "rekeyed.json";

/// Acknowledged source offsets per topic and partition.
pub type Acked = BTreeMap<(String, i32), i64>;

/// Source offsets of one partition read back from the repartition topic,
/// with their payloads' [`fingerprint`]s.
pub type ReadBack = BTreeMap<i64, u64>;

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The last acknowledged source offset per source partition.
    pub acked: Acked,
    /// Per repartition partition, an offset no record republished after the
    /// acknowledged ones can be before.
    pub landed: BTreeMap<i32, i64>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    /// The re-keying group the offsets belong to.
    group: String,
    /// `[topic, partition, offset]` triples.
    acked: Vec<(String, i32, i64)>,
    /// `[partition, offset]` pairs of the repartition topic.
    landed: Vec<(i32, i64)>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The offsets `group` recorded in `dir`; none if the file is missing,
/// unreadable or another group's (said in a warning: it costs redeliveries,
/// not data).
pub fn read(dir: &Path, group: &str) -> Progress {
    let p = path(dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Progress::default(),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "re-keying progress unreadable; republishing from the committed offsets");
            return Progress::default();
        }
    };
    match serde_json::from_str::<Body>(&text) {
        Ok(b) if b.group == group => Progress {
            acked: b.acked.into_iter().map(|(t, p, o)| ((t, p), o)).collect(),
            landed: b.landed.into_iter().collect(),
        },
        Ok(b) => {
            tracing::warn!(path = %p.display(), found = b.group, group, "re-keying progress of another group ignored");
            Progress::default()
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "re-keying progress unreadable; republishing from the committed offsets");
            Progress::default()
        }
    }
}

/// Replaces the file with `progress`.
pub fn write(dir: &Path, group: &str, progress: &Progress) -> io::Result<()> {
    let body = Body {
        group: group.to_string(),
        acked: progress
            .acked
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect(),
        landed: progress.landed.iter().map(|(p, o)| (*p, *o)).collect(),
    };
    let text = serde_json::to_vec(&body).map_err(io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let target = path(dir);
    let tmp = target.with_extension("json.tmp");
    let mut f = super::owner_only()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&text)?;
    drop(f);
    std::fs::rename(&tmp, &target)
}

/// A record's payload, as far as telling a republished copy from another
/// record at the same offset goes (a source topic recreated since); xxh3,
/// as the changelog fingerprints its values. No payload is republished as
/// an empty one, so both fingerprint alike.
pub fn fingerprint(payload: Option<&[u8]>) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload.unwrap_or_default())
}

/// What an assigned partition skips: every offset up to `through`, and
/// those in `also` beyond it whose payload is the one that landed (records
/// that landed while unacknowledged: the ones before them may not have, as
/// they went to other partitions).
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    /// Acknowledged up to here.
    pub through: i64,
    /// Read back from the repartition topic: offset and payload fingerprint.
    pub also: ReadBack,
}

impl Skip {
    /// Whether the record at `offset` with `payload` was republished already.
    pub fn covers(&self, offset: i64, payload: Option<&[u8]>) -> bool {
        offset <= self.through
            || self
                .also
                .get(&offset)
                .is_some_and(|&f| f == fingerprint(payload))
    }

    /// For a partition whose group offset is `committed`, of which `acked`
    /// was recorded as acknowledged and `found` read back from the
    /// repartition topic, what was republished from `committed` on.
    /// `acked` counts only while nobody took the partition further since
    /// (else the group is past it) and only with a group offset (without
    /// one, the record may be of a topic since recreated); what was read
    /// back counts where its payload is the record's, whoever wrote it.
    pub fn of(
        acked: Option<i64>,
        found: Option<&ReadBack>,
        committed: Option<i64>,
    ) -> Option<Skip> {
        let through = match (acked, committed) {
            (Some(a), Some(c)) if a + 1 >= c => a,
            (_, Some(c)) => c - 1,
            (_, None) => -1,
        };
        let also: ReadBack = found
            .into_iter()
            .flatten()
            .filter(|&(&o, _)| o > through)
            .map(|(&o, &f)| (o, f))
            .collect();
        (through >= committed.unwrap_or(0) || !also.is_empty()).then_some(Skip { through, also })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_per_group_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(dir.path(), "g"),
            Progress::default(),
            "no file: nothing"
        );
        let progress = Progress {
            acked: [
                (("orders".to_string(), 0), 41),
                (("orders".to_string(), 1), 7),
            ]
            .into_iter()
            .collect(),
            landed: [(0, 12), (1, 0)].into_iter().collect(),
        };
        write(dir.path(), "g", &progress).unwrap();
        assert_eq!(read(dir.path(), "g"), progress);
        assert_eq!(
            read(dir.path(), "other"),
            Progress::default(),
            "another group's"
        );
        std::fs::write(path(dir.path()), b"{\"group\":").unwrap();
        assert_eq!(read(dir.path(), "g"), Progress::default(), "a torn file");
    }

    #[test]
    fn only_what_landed_from_the_committed_offset_on_is_skipped() {
        let (a, b) = (Some(&b"a"[..]), Some(&b"b"[..]));
        let found: BTreeMap<i64, u64> = [(44, fingerprint(a)), (46, fingerprint(b))]
            .into_iter()
            .collect();
        let skip = Skip::of(Some(41), Some(&found), Some(30)).unwrap();
        assert!((30..=41).all(|o| skip.covers(o, None)));
        assert!(skip.covers(44, a) && skip.covers(46, b));
        // 42, 43 and 45 went to partitions they had not reached yet.
        assert!(!skip.covers(42, a) && !skip.covers(45, a) && !skip.covers(47, a));
        // Another record at an offset that landed: not the one republished.
        assert!(!skip.covers(44, b) && !skip.covers(46, None));
        // A record without a payload is republished with an empty one.
        let empty: ReadBack = [(50, fingerprint(Some(b"")))].into_iter().collect();
        let skip = Skip::of(Some(41), Some(&empty), Some(30)).unwrap();
        assert!(skip.covers(50, None));
        // Nothing acknowledged since the commit, but some landed.
        let skip = Skip::of(Some(29), Some(&found), Some(30)).unwrap();
        assert!(!skip.covers(30, a) && skip.covers(44, a));
        assert_eq!(Skip::of(Some(29), None, Some(30)), None);
        // Killed before anything was acknowledged: what landed still counts.
        let skip = Skip::of(None, Some(&found), None).unwrap();
        assert!(!skip.covers(0, a) && skip.covers(44, a) && skip.covers(46, b));
        let skip = Skip::of(None, Some(&found), Some(45)).unwrap();
        assert!(skip.covers(44, None) && skip.covers(46, b) && !skip.covers(45, a));
        // The group is past the record (another instance went on): only
        // what landed past the group offset.
        let skip = Skip::of(Some(41), Some(&found), Some(45)).unwrap();
        assert!(!skip.covers(45, a) && skip.covers(46, b));
        assert_eq!(Skip::of(Some(41), Some(&found), Some(50)), None);
        // No group offset (a new group, a recreated topic): the record's
        // acknowledgements count for nothing.
        assert_eq!(Skip::of(Some(41), None, None), None);
        assert_eq!(Skip::of(None, None, Some(3)), None);
    }
}
