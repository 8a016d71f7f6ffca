//! The cluster key file: written by `lbfo-agentd keygen`, read at start.
//!
//! The file holds the key as hex text (32 random bytes from the kernel: 64 hex digits and a
//! newline). **A key file that is not a regular file owned by the agent's user (its euid: root
//! when installed), or that anyone else can read, is refused**: whoever reads the key can change
//! every table in the cluster, and a file's owner can always read it (and chmod it, and write a
//! key of their choosing into it).

use std::os::fd::AsFd;
use std::path::Path;

use crate::sys::io_text;

/// Bytes in a generated key.
pub const KEY_BYTES: usize = 32;
/// The shortest key accepted (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes a new random key to `path` (mode 0600); refuses to overwrite an existing file.
pub fn generate(path: &Path) -> Result<(), String> {
    let mut key = [0u8; KEY_BYTES];
    crate::sys::random(&mut key).map_err(|e| format!("getrandom: {}", io_text(&e)))?;
    // The key as hex digits and a newline, written straight from a buffer.
    let mut text = [b'\n'; 2 * KEY_BYTES + 1];
    for (i, b) in key.into_iter().enumerate() {
        text[2 * i] = HEX[usize::from(b >> 4)];
        text[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let f = crate::sys::fs::open(path, flags, 0o600).map_err(|e| io_text(&e))?;
    crate::sys::fs::write_all(f.as_fd(), &text)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_text(&e))
}

/// Reads and checks a key file; the error says what is wrong.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = crate::sys::fs::open(path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
        .map_err(|e| io_text(&e))?;
    let m = crate::sys::fs::fstat(f.as_fd()).map_err(|e| io_text(&e))?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid != me {
        return Err(format!(
            "owned by uid {}, not by the agent's user (uid {me}): its owner can read and change \
             it; chown it",
            m.uid
        ));
    }
    if m.mode & 0o077 != 0 {
        return Err(format!(
            "mode {:04o} lets other users read or change it; chmod 600 it",
            m.mode & 0o7777
        ));
    }
    let bad = || "not a key file (expected hex text)".to_owned();
    let bytes = crate::sys::fs::read_all(&mut f).map_err(|_| bad())?;
    parse(std::str::from_utf8(&bytes).map_err(|_| bad())?)
}

fn parse(text: &str) -> Result<Vec<u8>, String> {
    let t = text.as_bytes().trim_ascii();
    let bad = || format!("not a key (expected at least {MIN_KEY_BYTES} bytes as hex digits)");
    if t.len() % 2 != 0 || t.len() < 2 * MIN_KEY_BYTES {
        return Err(bad());
    }
    // Each pair of characters as `u8::from_str_radix(pair, 16)` reads it (which takes a `+`
    // before a single digit too), by hand for the router size budget.
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut key = Vec::with_capacity(t.len() / 2);
    for pair in t.chunks_exact(2) {
        let byte = match *pair {
            [b'+', lo] => hex(lo),
            [hi, lo] => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        key.push(byte.ok_or_else(bad)? as u8);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_read_and_refuse() {
        let dir = std::env::temp_dir().join(format!("lbfo-key-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        generate(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&p).unwrap().len(), KEY_BYTES);
        assert!(generate(&p).is_err(), "never overwrites");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read(&p).unwrap_err(),
            "mode 0640 lets other users read or change it; chmod 600 it"
        );
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            assert_eq!(
                read(&p).unwrap_err(),
                "owned by uid 65534, not by the agent's user (uid 0): its owner can read and \
                 change it; chown it"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse("abcd").is_err());
        assert!(parse(&"zz".repeat(16)).is_err());
        assert_eq!(parse(&"0f".repeat(16)).unwrap(), vec![15; 16]);
        // What `u8::from_str_radix` takes, as before: `+` before one digit, any case.
        assert_eq!(parse(&"+fFf".repeat(8)).unwrap(), [15, 255].repeat(8));
        assert!(parse(&"-f".repeat(16)).is_err());
        assert!(parse(&"é".repeat(16)).is_err());
    }
}
