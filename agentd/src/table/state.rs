//! The state file (`state PATH`): every change the agent applied, persisted so that a restart —
//! even after `kill -9` — loses none.
//!
//! **Written atomically** (`sys::fs::write_atomically`): the new contents go to a temporary file
//! beside `PATH`, created `O_CREAT | O_EXCL | O_NOFOLLOW` under a random name (nothing planted
//! there, not even in a directory such as `/tmp` that others may write, is followed or
//! overwritten), fsynced and renamed over `PATH`, and then the directory is fsynced, so the file on
//! disk is always a whole old or a whole new version, mode 0600. The agent writes it at the start
//! of every publish that follows a change (see `Agent::publish`): once per batch (a wake-up's FIFO
//! lines or datagrams), and **before the batch reaches the shared table** — no lookup sees, and no
//! log line reports, a change that a `kill -9` could still lose.
//!
//! **Read only if it is the agent's own** ([`load`]): a regular file owned by the user the agent
//! runs as (root, when installed) that no group or other user may write, opened without following
//! a symlink. Anything else is refused with the reason, and the agent starts from its config (and
//! the group): whoever could write the file could otherwise choose the table.
//!
//! **Decoded entry by entry**: a damaged or truncated file gives up only what is damaged; every
//! line and entry before and after a bad one (and before a cut) is still restored. A file that
//! was refused or not whole is moved aside to `PATH.bad-<UTC time>` (never over an existing file,
//! never overwritten) and logged, so the agent's next save cannot destroy what an admin may want
//! to look at.
//!
//! Contents (postcard, with [`VERSION`]): the save time, the table as command lines (an agent
//! alone), the replica's entries with their stamps and tombstones (in a cluster), so after a
//! restart the cluster's merge orders the saved changes, the config and the peers' changes exactly
//! as before. Version 2 frames every entry as bytes of its own (length, then the entry's
//! postcard), so a bad one is skipped without losing the rest; version 1 files (entries one after
//! the other) are still read, up to their first bad entry. Only the wire types derive serde; the
//! entries use [`WEntry`].

use crate::sys::fs::Shown;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lbfo_core::{parse_line, Command, Line};
use serde::Deserialize;

use crate::cluster::replica::Entry;
use crate::cluster::wire::{from_wire, to_wire, WEntry};

/// The state file's format version (2: each replicated entry framed as bytes of its own).
pub const VERSION: u8 = 2;

/// The file's contents as one type: version, save time, table lines, replica entries (each one's
/// postcard bytes). `encode` writes it and `decode` reads it field by field (the one in
/// one buffer, the other entry by entry, to keep what is whole in a damaged file); the tests
/// hold both to postcard's encoding of this type. A tuple struct, so serde's derive makes no
/// field-name matching that postcard never uses.
#[cfg(test)]
#[derive(serde::Serialize, Deserialize)]
struct WState(u8, u64, Vec<String>, Vec<Vec<u8>>);

/// A state file's contents.
#[derive(Debug, Default)]
pub struct Saved {
    /// When it was written (ms since the epoch).
    pub saved_ms: u64,
    /// The table as commands (an agent alone).
    pub table: Vec<Command>,
    /// The replica's entries (in a cluster).
    pub replica: Vec<Entry>,
    /// Only part of the file could be read: the config's commands are applied on top of it,
    /// whenever the config was written, and nothing is deleted for not being in the config.
    pub damaged: bool,
}

/// What [`decode`] could not take, for the log; empty when the file was whole.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// Table lines and replicated entries skipped (and why, for the first).
    pub skipped: usize,
    /// The first problem met.
    pub first: Option<String>,
}

impl Damage {
    fn note(&mut self, what: String) {
        self.skipped += 1;
        self.first.get_or_insert(what);
    }
}

/// Encodes a state. `table` holds command lines in the command language.
///
/// The bytes are postcard's for `WState`, written field by field: the first three as a tuple,
/// then the entries' count and each entry as a byte string, each serialized into one reused
/// buffer. A vector per entry, then the whole copied again, made saving a cluster's replica of
/// tens of thousands of entries cost more than taking them in.
pub fn encode(saved_ms: u64, table: Vec<String>, replica: &[Entry]) -> Vec<u8> {
    let mut out = postcard::to_extend(&(VERSION, saved_ms, table), Vec::new()).unwrap_or_default();
    out = postcard::to_extend(&replica.len(), out).unwrap_or_default();
    let mut one = Vec::new();
    for e in replica {
        one.clear();
        // An entry that does not serialize (none does not) is an empty byte string, which
        // `decode` counts as damage.
        one = postcard::to_extend(&to_wire(e), one).unwrap_or_default();
        out = postcard::to_extend(&one.len(), out).unwrap_or_default();
        out.extend_from_slice(&one);
    }
    out
}

/// Takes one postcard value off the front of `rest`.
fn take<'a, T: Deserialize<'a>>(rest: &mut &'a [u8]) -> Option<T> {
    let (v, tail) = postcard::take_from_bytes(rest).ok()?;
    *rest = tail;
    Some(v)
}

/// Decodes a state as far as it goes: every line and entry that decodes, and what did not.
/// `Err` only when nothing at all can be read (not a state file, or a version this agent does
/// not know).
pub fn decode(bytes: &[u8]) -> Result<(Saved, Damage), String> {
    let mut rest = bytes;
    let version: u8 = take(&mut rest).ok_or("empty")?;
    if version == 0 || version > VERSION {
        return Err(format!(
            "format version {version} (this agent reads 1 to {VERSION})"
        ));
    }
    let saved_ms: u64 = take(&mut rest).ok_or("truncated in its header")?;
    let (mut saved, mut damage) = (
        Saved {
            saved_ms,
            ..Saved::default()
        },
        Damage::default(),
    );
    // `of` is the count the file claims, which may be anything up to usize::MAX.
    let cut = |d: &mut Damage, n: usize, of: usize, what: &str| {
        d.skipped = d.skipped.saturating_add(of - n);
        d.first
            .get_or_insert(format!("truncated after {n} of {of} {what}"));
    };
    let Some(lines) = take::<usize>(&mut rest) else {
        damage.note("truncated before the table lines".into());
        return Ok((saved, damage));
    };
    for i in 0..lines {
        let Some(l) = take::<&[u8]>(&mut rest) else {
            cut(&mut damage, i, lines, "table lines");
            return Ok((saved, damage));
        };
        match std::str::from_utf8(l).ok().map(parse_line) {
            Some(Ok(Some(Line::Command(c)))) => saved.table.push(c),
            Some(Ok(None)) => {}
            _ => damage.note(format!(
                "table line {}: not a command: {}",
                i + 1,
                String::from_utf8_lossy(l)
            )),
        }
    }
    let Some(entries) = take::<usize>(&mut rest) else {
        damage.note("truncated before the replicated entries".into());
        return Ok((saved, damage));
    };
    for i in 0..entries {
        match entry(version, &mut rest) {
            Some(Some(e)) => saved.replica.push(e),
            Some(None) => damage.note(format!("replicated entry {}: does not decode", i + 1)),
            None => {
                cut(&mut damage, i, entries, "replicated entries");
                return Ok((saved, damage));
            }
        }
    }
    if !rest.is_empty() {
        damage.note(format!("{} bytes after the last entry", rest.len()));
    }
    Ok((saved, damage))
}

/// The next replicated entry off the front of `rest`: `Some(None)` for one that is there but
/// does not decode (skipped), `None` when nothing more can be found. Version 2 frames each entry
/// as bytes of its own, so a bad one is skipped alone; in version 1 entries follow each other, so
/// nothing after one that does not decode can be found.
fn entry(version: u8, rest: &mut &[u8]) -> Option<Option<Entry>> {
    let wire = if version == 1 {
        take::<WEntry>(rest)?
    } else {
        match postcard::from_bytes::<WEntry>(take::<&[u8]>(rest)?) {
            Ok(w) => w,
            Err(_) => return Some(None),
        }
    };
    Some(from_wire(&wire))
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file yet.
    Missing,
    /// A whole state.
    Whole(Saved),
    /// What could be decoded of a damaged file, and the log line saying what was not (and where
    /// the file was moved).
    Damaged(Saved, String),
    /// Nothing read: the log line saying why (and where the file was moved, if it was).
    Refused(String),
}

/// Reads the state at `path`, if it is the agent's own (see the module docs); a file refused or
/// damaged is moved aside to `PATH.bad-<UTC time of now_ms>`.
pub fn load(path: &Path, now_ms: u64) -> Loaded {
    let shown = path.shown();
    let refused = |why: String| {
        let aside = set_aside(path, now_ms);
        Loaded::Refused(format!(
            "state {shown}: {why}; not read{aside}; starting from the config (and the group)"
        ))
    };
    let bytes = match read_own(path) {
        Ok(b) => b,
        Err(Unread::Missing) => return Loaded::Missing,
        Err(Unread::Io(e)) => {
            return Loaded::Refused(format!(
                "state {shown}: {e}; starting from the config (and the group)"
            ))
        }
        Err(Unread::NotOurs(why)) => return refused(why),
    };
    match decode(&bytes) {
        Err(why) => refused(why),
        Ok((saved, Damage { first: None, .. })) => Loaded::Whole(saved),
        Ok((saved, d)) => {
            let aside = set_aside(path, now_ms);
            let saved = Saved {
                damaged: true,
                ..saved
            };
            let (kept, first) = (
                saved.table.len() + saved.replica.len(),
                d.first.unwrap_or_default(),
            );
            Loaded::Damaged(
                saved,
                format!(
                    "state {shown}: damaged ({first}); restored the {kept} lines and entries that \
                     decode, skipped {}{aside}; the config is applied on top",
                    d.skipped
                ),
            )
        }
    }
}

/// Why the file was not read.
enum Unread {
    Missing,
    Io(String),
    NotOurs(String),
}

/// The contents of `path` if it is a regular file of this agent's user that no one else may
/// write, read through the descriptor that was checked.
fn read_own(path: &Path) -> Result<Vec<u8>, Unread> {
    // O_NOFOLLOW: a symlink is refused (ELOOP); O_NONBLOCK: a FIFO planted here cannot hang us.
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let mut f = crate::sys::fs::open(path, flags, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Unread::Missing,
        Some(libc::ELOOP) => Unread::NotOurs("a symlink".into()),
        _ => Unread::Io(crate::sys::io_text(&e)),
    })?;
    let m = crate::sys::fs::fstat(f.as_fd()).map_err(|e| Unread::Io(crate::sys::io_text(&e)))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_file() {
        return Err(Unread::NotOurs("not a regular file".into()));
    }
    if m.uid != me {
        return Err(Unread::NotOurs(format!(
            "owned by uid {}, not by the agent's user (uid {me})",
            m.uid
        )));
    }
    if m.mode & 0o022 != 0 {
        return Err(Unread::NotOurs(format!(
            "mode {:04o} lets other users write it",
            m.mode & 0o7777
        )));
    }
    crate::sys::fs::read_all(&mut f).map_err(|e| Unread::Io(crate::sys::io_text(&e)))
}

/// Moves `path` to `PATH.bad-<UTC time>` (or `...-2`, `-3`, ... if taken): the text to add to
/// the log line, which says where it went or why it stayed.
fn set_aside(path: &Path, now_ms: u64) -> String {
    let base = format!("{}.bad-{}", path.shown(), utc(now_ms / 1000));
    let mut last = String::new();
    for n in 1..=9 {
        let to = if n == 1 {
            PathBuf::from(&base)
        } else {
            PathBuf::from(format!("{base}-{n}"))
        };
        match crate::sys::fs::rename_noreplace(path, &to) {
            Ok(()) => return format!("; kept as {}", to.shown()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => {
                last = crate::sys::io_text(&e);
                break;
            }
        }
    }
    format!("; could not move it aside ({last}), so it is not written over either")
}

/// Seconds since the epoch as `YYYYMMDDTHHMMSSZ` (UTC), by the days-to-civil-date arithmetic
/// of the proleptic Gregorian calendar.
fn utc(secs: u64) -> String {
    let (days, s) = (secs / 86_400, secs % 86_400);
    // Days since 0000-03-01, so a year's leap day is its last.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn c(l: &str) -> Command {
        match parse_line(l) {
            Ok(Some(Line::Command(c))) => c,
            other => panic!("{other:?}"),
        }
    }

    fn entries() -> Vec<Entry> {
        let mut r = Replica::new(7);
        r.command(&c("add a.lan 10.0.0.1 weight=3"), 1_000).unwrap();
        r.command(&c("add b.lan 10.0.0.2"), 1_500).unwrap();
        r.command(&c("del a.lan 10.0.0.1"), 2_000).unwrap();
        r.entries(u64::MAX)
    }

    fn lines() -> Vec<String> {
        vec![
            "add b.lan 10.0.0.2 weight=2".into(),
            "down b.lan 10.0.0.2".into(),
            "add c.lan 10.0.0.3".into(),
        ]
    }

    /// A private directory, removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lbfo-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn names(d: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// Found by the `state_file` fuzz target: a bad table line, then a count of entries near
    /// usize::MAX with nothing after it. The skipped count saturates rather than overflowing
    /// (a panic in debug builds, a wrong count in release ones).
    #[test]
    fn a_huge_count_after_other_damage_is_reported_not_overflowed() {
        let data = [
            1u8, 1, 1, 5, 1, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1, 1,
            1, 1, 1, 1, 1, 9, 255, 254, 254,
        ];
        let (saved, damage) = decode(&data).unwrap();
        assert!(saved.table.is_empty() && saved.replica.is_empty());
        assert!(damage
            .first
            .unwrap()
            .starts_with("table line 1: not a command"));
        assert_eq!(damage.skipped, usize::MAX);
    }

    /// `encode` writes field by field what postcard writes for the whole `WState`.
    #[test]
    fn the_encoding_is_postcards_for_the_whole_state() {
        for entries in [entries(), Vec::new()] {
            let wire: Vec<Vec<u8>> = entries
                .iter()
                .map(|e| postcard::to_allocvec(&to_wire(e)).unwrap())
                .collect();
            let whole = postcard::to_allocvec(&WState(VERSION, 5, lines(), wire)).unwrap();
            assert_eq!(encode(5, lines(), &entries), whole);
        }
    }

    #[test]
    fn round_trip_and_atomic_save() {
        let entries = entries();
        let bytes = encode(5, lines(), &entries);
        let (s, damage) = decode(&bytes).unwrap();
        assert_eq!(damage, Damage::default());
        assert_eq!(s.saved_ms, 5);
        assert_eq!(s.table, lines().iter().map(|l| c(l)).collect::<Vec<_>>());
        assert_eq!(s.replica, entries, "tombstones and stamps survive");

        let d = dir("save");
        let p = d.0.join("state");
        assert!(matches!(load(&p, 0), Loaded::Missing));
        save(&p, &bytes).unwrap();
        save(&p, &bytes).unwrap();
        let Loaded::Whole(s) = load(&p, 0) else {
            panic!()
        };
        assert_eq!(s.replica, entries);
        assert_eq!(names(&d.0), ["state"], "no temporary file left");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_version_1_file_is_read() {
        #[derive(serde::Serialize)]
        struct V1(u8, u64, Vec<String>, Vec<WEntry>);
        let entries = entries();
        let v1 = postcard::to_allocvec(&V1(1, 9, lines(), entries.iter().map(to_wire).collect()))
            .unwrap();
        let (s, damage) = decode(&v1).unwrap();
        assert_eq!((s.saved_ms, s.table.len(), s.replica), (9, 3, entries));
        assert_eq!(damage, Damage::default());
        assert!(decode(&[3, 0]).unwrap_err().contains("format version 3"));
        assert!(decode(b"").is_err());
    }

    #[test]
    fn a_bad_line_or_entry_costs_only_itself() {
        let entries = entries();
        let mut bad_lines = lines();
        bad_lines[1] = "frobnicate b.lan".into();
        let mut wire: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| postcard::to_allocvec(&to_wire(e)).unwrap())
            .collect();
        wire[1] = vec![0xff; 3];
        let bytes = postcard::to_allocvec(&WState(VERSION, 5, bad_lines, wire)).unwrap();
        let (s, damage) = decode(&bytes).unwrap();
        assert_eq!(
            s.table,
            [c("add b.lan 10.0.0.2 weight=2"), c("add c.lan 10.0.0.3")]
        );
        let mut want = entries.clone();
        want.remove(1);
        assert_eq!(s.replica, want, "the entries around the bad one");
        assert_eq!(damage.skipped, 2);
        assert_eq!(
            damage.first.as_deref(),
            Some("table line 2: not a command: frobnicate b.lan")
        );
    }

    #[test]
    fn a_truncated_file_gives_everything_before_the_cut() {
        let entries = entries();
        let bytes = encode(5, lines(), &entries);
        let mut restored = 0;
        for len in 0..bytes.len() {
            let Ok((s, damage)) = decode(&bytes[..len]) else {
                assert!(len < 2, "only an empty file or a bare version says nothing");
                continue;
            };
            let n = s.table.len() + s.replica.len();
            assert!(n >= restored, "a longer prefix never gives less");
            restored = n;
            assert!(
                n < lines().len() + entries.len(),
                "{len}: something is missing"
            );
            assert!(
                damage.first.as_deref().unwrap_or("").contains("truncated"),
                "{len}: {damage:?}"
            );
            assert_eq!(&s.replica[..], &entries[..s.replica.len()]);
        }
        assert_eq!(restored, lines().len() + entries.len() - 1);
        let mut long = bytes.clone();
        long.push(0);
        let (_, damage) = decode(&long).unwrap();
        assert_eq!(
            damage.first.as_deref(),
            Some("1 bytes after the last entry")
        );
    }

    #[test]
    fn only_the_agents_own_file_is_read_and_a_bad_one_is_kept_aside() {
        let d = dir("refuse");
        let p = d.0.join("state");
        let bytes = encode(5, lines(), &entries());
        // 2025-12-04 09:55:00 UTC.
        let now = 1_764_842_100_000;
        let refused = |expect: &str| match load(&p, now) {
            Loaded::Refused(line) => assert!(line.contains(expect), "{line}"),
            other => panic!("{other:?}"),
        };
        save(&p, &bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o620)).unwrap();
        refused("mode 0620 lets other users write it; not read; kept as ");
        assert_eq!(names(&d.0), ["state.bad-20251204T095500Z"]);
        // A symlink is not followed; the link itself is moved aside.
        let victim = d.0.join("victim");
        fs::write(&victim, &bytes).unwrap();
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        refused("a symlink; not read; kept as ");
        assert!(
            fs::symlink_metadata(d.0.join("state.bad-20251204T095500Z-2"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A FIFO is refused without hanging on it.
        crate::sys::fs::mkfifo(&p, 0o600).unwrap();
        refused("not a regular file");
        // Damaged: what decodes is restored, the file kept beside, the earlier ones untouched.
        fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let Loaded::Damaged(s, line) = load(&p, now) else {
            panic!()
        };
        assert_eq!(s.table.len(), 3);
        assert!(
            line.contains(
                "damaged (truncated after 3 of 4 replicated entries); restored the 6 lines and \
                 entries that decode, skipped 1; kept as "
            ) && line.ends_with("state.bad-20251204T095500Z-4; the config is applied on top"),
            "{line}"
        );
        assert!(!p.exists());
        assert_eq!(fs::read(&victim).unwrap(), bytes);
        if nix::unistd::geteuid().is_root() {
            save(&p, &bytes).unwrap();
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            refused("owned by uid 65534, not by the agent's user (uid 0)");
        }
    }

    #[test]
    fn saving_replaces_a_symlink_planted_at_the_path_and_never_follows_it() {
        let d = dir("plant");
        let (p, victim) = (d.0.join("state"), d.0.join("victim"));
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        save(&p, &encode(1, lines(), &[])).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "19700101T000000Z");
        assert_eq!(utc(951_782_400), "20000229T000000Z");
        assert_eq!(utc(1_709_251_199), "20240229T235959Z");
        assert_eq!(utc(1_764_842_100), "20251204T095500Z");
        assert_eq!(utc(4_107_542_399), "21000228T235959Z");
    }
}
