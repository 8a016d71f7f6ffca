//! The cluster key file: written by `lbfo-agentd keygen`, read at start.
//!
//! The file holds the key as hex text (32 random bytes from the kernel: 64 hex digits and a
//! newline). **A key file that anyone but its owner can read, or that is not a regular file, is
//! refused**: whoever reads the key can change every table in the cluster.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Bytes in a generated key.
pub const KEY_BYTES: usize = 32;
/// The shortest key accepted (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// Writes a new random key to `path` (mode 0600); refuses to overwrite an existing file.
pub fn generate(path: &Path) -> Result<(), String> {
    let mut key = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    let mut hex = String::with_capacity(2 * KEY_BYTES);
    for b in key {
        for nibble in [b >> 4, b & 15] {
            hex.push(char::from(b"0123456789abcdef"[usize::from(nibble)]));
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| e.to_string())
}

/// Reads and checks a key file; the error says what is wrong.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:04o} lets other users read or change it; chmod 600 it",
            m.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|_| "not a key file (expected hex text)".to_owned())?;
    parse(&text)
}

fn parse(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let bad = || format!("not a key (expected at least {MIN_KEY_BYTES} bytes as hex digits)");
    if t.len() % 2 != 0 || t.len() < 2 * MIN_KEY_BYTES {
        return Err(bad());
    }
    (0..t.len())
        .step_by(2)
        .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)
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
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse("abcd").is_err());
        assert!(parse(&"zz".repeat(16)).is_err());
        assert_eq!(parse(&"0f".repeat(16)).unwrap(), vec![15; 16]);
    }
}
