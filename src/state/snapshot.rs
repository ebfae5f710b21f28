//! Local partition snapshots: plain data in, plain data out, with the input
//! offsets they cover.
//!
//! File layout: magic `CWSNAP01`, format version (u32 LE), xxh3-64 of the
//! body (u64 LE), body length (u64 LE), body (postcard). Written to a
//! temporary file and synced; the current snapshot is then renamed to
//! `partition-N.prev.snap` and the new one takes its place, so a crash leaves
//! a complete file of this round or of the one before. The previous file
//! lets a restart find one round that every partition has, when a crash cut
//! a round short after some of its partitions were written. A file
//! that is corrupt, truncated, of another version or not a snapshot at all
//! is refused with a clear error; the caller then rebuilds from Kafka.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::PartitionState;

const MAGIC: &[u8; 8] = b"CWSNAP01";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 6;
const HEADER: usize = 8 + 4 + 8 + 8;

/// A partition's state and the input it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The snapshot round: the same for every partition written together,
    /// larger for later rounds.
    pub round: u64,
    /// Per input topic of this partition: the next offset to consume.
    pub offsets: Vec<(String, i64)>,
    /// Whose state this is; checked on load.
    pub owner: Owner,
    /// The partition's state.
    pub state: PartitionState,
}

/// Whose partition state a snapshot holds: a copied, renamed or stale file
/// (another cluster, group or topic set) is refused like a corrupt one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The Kafka cluster's id as the broker reports it ("" if it reports none).
    pub cluster_id: String,
    /// `kafka.group_id`.
    pub group_id: String,
    /// `kafka.input_topics`, in config order.
    pub topics: Vec<String>,
}

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// Not a churnwatch snapshot (wrong magic bytes).
    #[error("snapshot {path}: not a churnwatch snapshot")]
    Foreign {
        /// The file.
        path: String,
    },
    /// Written by a different format version.
    #[error("snapshot {path}: format version {found}, this build reads {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: String,
        /// The version it has.
        found: u32,
    },
    /// A valid snapshot of some other partition, cluster, group or topics.
    #[error("snapshot {path}: not this partition's state ({why})")]
    NotOurs {
        /// The file.
        path: String,
        /// What differs.
        why: String,
    },
    /// Truncated, or the checksum or decoding failed.
    #[error("snapshot {path}: corrupt ({why})")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Where partition `p`'s snapshot lives in `dir`.
pub fn path(dir: &Path, partition: u16) -> PathBuf {
    dir.join(format!("partition-{partition}.snap"))
}

/// Where partition `p`'s previous snapshot lives in `dir`.
fn previous_path(dir: &Path, partition: u16) -> PathBuf {
    dir.join(format!("partition-{partition}.prev.snap"))
}

/// Writes atomically, keeping the snapshot it replaces as the previous one;
/// returns the file's size.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<u64, SnapshotError> {
    let target = path(dir, snapshot.state.partition);
    let shown = target.display().to_string();
    let io_err = |source| SnapshotError::Io {
        path: shown.clone(),
        source,
    };
    let body = postcard::to_allocvec(snapshot).map_err(|e| SnapshotError::Corrupt {
        path: shown.clone(),
        why: e.to_string(),
    })?;
    private_dir(dir).map_err(io_err)?;
    let tmp = target.with_extension("snap.tmp");
    let mut f = private_file(&tmp).map_err(io_err)?;
    f.write_all(MAGIC).map_err(io_err)?;
    f.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io_err)?;
    f.write_all(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes())
        .map_err(io_err)?;
    f.write_all(&(body.len() as u64).to_le_bytes())
        .map_err(io_err)?;
    f.write_all(&body).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    drop(f);
    match fs::rename(&target, previous_path(dir, snapshot.state.partition)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    fs::rename(&tmp, &target).map_err(io_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    Ok((HEADER + body.len()) as u64)
}

/// Creates `dir` (and its parents) if missing and makes it owner-only
/// (0700): snapshots hold customer data.
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates (or truncates) a file only its owner may read (0600).
fn private_file(path: &Path) -> io::Result<File> {
    super::owner_only()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Reads partition `p`'s snapshot if it is `owner`'s; `Ok(None)` if there is none.
pub fn read(dir: &Path, partition: u16, owner: &Owner) -> Result<Option<Snapshot>, SnapshotError> {
    read_file(&path(dir, partition), partition, owner)
}

/// Reads partition `p`'s previous snapshot if it is `owner`'s; `Ok(None)`
/// if there is none.
pub fn read_previous(
    dir: &Path,
    partition: u16,
    owner: &Owner,
) -> Result<Option<Snapshot>, SnapshotError> {
    read_file(&previous_path(dir, partition), partition, owner)
}

fn read_file(
    target: &Path,
    partition: u16,
    owner: &Owner,
) -> Result<Option<Snapshot>, SnapshotError> {
    let Some(snap) = read_any(target)? else {
        return Ok(None);
    };
    let path = target.display().to_string();
    let why = if snap.state.partition != partition {
        Some(format!(
            "it holds partition {}, not {partition}",
            snap.state.partition
        ))
    } else if snap.owner.cluster_id != owner.cluster_id {
        Some(format!(
            "written against cluster `{}`, this is `{}`",
            snap.owner.cluster_id, owner.cluster_id
        ))
    } else if snap.owner.group_id != owner.group_id {
        Some(format!(
            "written by group `{}`, this is `{}`",
            snap.owner.group_id, owner.group_id
        ))
    } else if snap.owner.topics != owner.topics {
        Some(format!(
            "written for topics {:?}, these are {:?}",
            snap.owner.topics, owner.topics
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(SnapshotError::NotOurs { path, why }),
        None => Ok(Some(snap)),
    }
}

fn read_any(target: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let path = target.display().to_string();
    let bytes = match fs::read(target) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(SnapshotError::Foreign { path });
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != FORMAT_VERSION {
        return Err(SnapshotError::Version { path, found });
    }
    let (sum, len) = (word(12), word(20));
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(SnapshotError::Corrupt {
            path,
            why: format!("body is {} bytes, header says {len}", body.len()),
        });
    }
    if xxhash_rust::xxh3::xxh3_64(body) != sum {
        return Err(SnapshotError::Corrupt {
            path,
            why: "checksum mismatch".into(),
        });
    }
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|e| SnapshotError::Corrupt {
            path,
            why: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::engine::native::decode;
    use crate::engine::watermark::Clock;

    fn snapshot() -> Snapshot {
        let mut engine = Engine::new(&Config::default().engine_settings(), Clock::Event);
        let mut out = Vec::new();
        for line in include_str!("../../tests/data/scenario.jsonl").lines() {
            if let Ok(ev) = decode(line.as_bytes(), engine.decode_limits()) {
                engine.apply(ev, 0, &mut out).unwrap();
            }
        }
        Snapshot {
            round: 1,
            offsets: vec![("purchases".into(), 17), ("calls".into(), 4)],
            owner: owner(),
            state: engine.partition_state(0),
        }
    }

    fn owner() -> Owner {
        Owner {
            cluster_id: "cluster-1".into(),
            group_id: "churnwatch".into(),
            topics: vec!["purchases".into(), "calls".into()],
        }
    }

    #[test]
    fn files_are_private_and_another_owners_or_partitions_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        write(&state, &snapshot()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&state), 0o700);
            assert_eq!(mode(&path(&state, 0)), 0o600);
        }
        assert!(read(&state, 0, &owner()).unwrap().is_some());
        for (other, named) in [
            (
                Owner {
                    cluster_id: "cluster-2".into(),
                    ..owner()
                },
                "cluster",
            ),
            (
                Owner {
                    group_id: "other".into(),
                    ..owner()
                },
                "group",
            ),
            (
                Owner {
                    topics: vec!["purchases".into()],
                    ..owner()
                },
                "topics",
            ),
        ] {
            let err = read(&state, 0, &other).unwrap_err();
            assert!(
                matches!(err, SnapshotError::NotOurs { .. }) && err.to_string().contains(named),
                "{err}"
            );
        }
        // A file renamed to another partition's name.
        fs::rename(path(&state, 0), path(&state, 3)).unwrap();
        let err = read(&state, 3, &owner()).unwrap_err();
        assert!(err.to_string().contains("partition 0, not 3"), "{err}");
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), 0, &owner()).unwrap().is_none());
        let s = snapshot();
        write(dir.path(), &s).unwrap();
        assert_eq!(read_previous(dir.path(), 0, &owner()).unwrap(), None);
        let next = Snapshot {
            round: 2,
            ..s.clone()
        };
        write(dir.path(), &next).unwrap();
        assert_eq!(read(dir.path(), 0, &owner()).unwrap(), Some(next));
        assert_eq!(read_previous(dir.path(), 0, &owner()).unwrap(), Some(s));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn corrupt_truncated_foreign_and_future_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snapshot()).unwrap();
        let p = path(dir.path(), 0);
        let good = fs::read(&p).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        fs::write(&p, &flipped).unwrap();
        assert!(matches!(
            read(dir.path(), 0, &owner()),
            Err(SnapshotError::Corrupt { .. })
        ));

        fs::write(&p, &good[..good.len() / 2]).unwrap();
        assert!(matches!(
            read(dir.path(), 0, &owner()),
            Err(SnapshotError::Corrupt { .. })
        ));

        fs::write(&p, b"{\"not\":\"a snapshot\"}").unwrap();
        assert!(matches!(
            read(dir.path(), 0, &owner()),
            Err(SnapshotError::Foreign { .. })
        ));

        let mut future = good.clone();
        future[8..12].copy_from_slice(&99u32.to_le_bytes());
        fs::write(&p, &future).unwrap();
        let err = read(dir.path(), 0, &owner()).unwrap_err();
        assert!(err.to_string().contains("format version 99"), "{err}");
    }
}
