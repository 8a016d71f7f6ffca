//! The state file (`state PATH`): every change the agent applied, persisted so that a restart —
//! even after `kill -9` — loses none.
//!
//! **Written atomically** (`sys::fs::write_atomically`): the new contents go to a temporary file
//! beside `PATH`, which is fsynced and renamed over it, and then the directory is fsynced, so the
//! file on disk is always a whole old or a whole new version. The agent writes it at the start of every publish that follows a change (see
//! `Agent::publish`): once per batch (a wake-up's FIFO lines or datagrams), and **before the batch
//! reaches the shared table** — no lookup sees, and no log line reports, a change that a `kill -9`
//! could still lose.
//!
//! Contents (postcard, with [`VERSION`]): the save time, and either the table as command lines (an
//! agent alone) or the replica's entries with their stamps and tombstones (in a cluster), so after
//! a restart the cluster's merge orders the saved changes, the config and the peers' changes
//! exactly as before. Only the wire types derive serde; the entries use [`WEntry`].

use std::path::Path;

use lbfo_core::{parse_line, Command, Line};
use serde::{Deserialize, Serialize};

use crate::cluster::replica::Entry;
use crate::cluster::wire::{from_wire, to_wire, WEntry};

/// The state file's format version.
pub const VERSION: u8 = 1;

/// The file's contents: version, save time, table lines, replica entries. A tuple struct, so
/// serde's derive makes no field-name matching that postcard never uses (router size budget);
/// postcard writes it exactly as the struct with named fields it was.
#[derive(Serialize, Deserialize)]
struct WState(u8, u64, Vec<String>, Vec<WEntry>);

/// A state file's contents.
#[derive(Debug, Default)]
pub struct Saved {
    /// When it was written (ms since the epoch).
    pub saved_ms: u64,
    /// The table as commands (an agent alone).
    pub table: Vec<Command>,
    /// The replica's entries (in a cluster).
    pub replica: Vec<Entry>,
}

/// Encodes a state. `table` holds command lines in the command language.
pub fn encode(saved_ms: u64, table: Vec<String>, replica: &[Entry]) -> Vec<u8> {
    let w = WState(
        VERSION,
        saved_ms,
        table,
        replica.iter().map(to_wire).collect(),
    );
    postcard::to_allocvec(&w).unwrap_or_default()
}

/// Decodes a state; `Err` says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Saved, String> {
    let WState(version, saved_ms, lines, entries) =
        postcard::from_bytes(bytes).map_err(|_| "not a state file".to_owned())?;
    if version != VERSION {
        return Err(format!(
            "format version {version} (this agent reads {VERSION})"
        ));
    }
    let mut table = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match parse_line(l) {
            Ok(Some(Line::Command(c))) => table.push(c),
            Ok(None) => {}
            _ => return Err(format!("entry {}: not a command: {l}", i + 1)),
        }
    }
    // A loop rather than `collect::<Option<Vec<_>>>()`, whose adapter is bigger on the router
    // build (size budget).
    let mut replica = Vec::with_capacity(entries.len());
    for e in &entries {
        let Some(e) = from_wire(e) else {
            return Err("a replicated entry does not decode".to_owned());
        };
        replica.push(e);
    }
    Ok(Saved {
        saved_ms,
        table,
        replica,
    })
}

/// Reads the state at `path`: `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Saved>, String> {
    match crate::sys::fs::read_file(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(crate::sys::io_text(&e)),
    }
}

/// Writes `bytes` to `path` atomically and durably (mode 0600: the table's history is root's).
pub fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::sys::fs::write_atomically(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::replica::Replica;
    use std::fs;

    #[test]
    fn round_trip_and_atomic_save() {
        let mut r = Replica::new(7);
        let c = |l: &str| match parse_line(l) {
            Ok(Some(Line::Command(c))) => c,
            other => panic!("{other:?}"),
        };
        r.command(&c("add a.lan 10.0.0.1 weight=3"), 1_000).unwrap();
        r.command(&c("del a.lan 10.0.0.1"), 2_000).unwrap();
        let entries = r.entries(u64::MAX);
        let bytes = encode(
            5,
            vec![
                "add b.lan 10.0.0.2 weight=2".into(),
                "down b.lan 10.0.0.2".into(),
            ],
            &entries,
        );
        let s = decode(&bytes).unwrap();
        assert_eq!(s.saved_ms, 5);
        assert_eq!(
            s.table,
            vec![c("add b.lan 10.0.0.2 weight=2"), c("down b.lan 10.0.0.2")]
        );
        assert_eq!(s.replica, entries, "tombstones and stamps survive");
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"").is_err());

        let dir = std::env::temp_dir().join(format!("lbfo-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state");
        assert!(load(&p).unwrap().is_none());
        save(&p, &bytes).unwrap();
        save(&p, &bytes).unwrap();
        assert_eq!(load(&p).unwrap().unwrap().replica, entries);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
