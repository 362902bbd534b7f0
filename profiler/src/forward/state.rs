//! What the forwarder keeps between runs: the state directory and the host id, a random id
//! generated once per host so the service can tell hosts apart without learning who they are.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The default state directory: systemd's `$STATE_DIRECTORY` (the unit's `StateDirectory=`),
/// else `$XDG_STATE_HOME/wakuprof`, else `$HOME/.local/state/wakuprof`.
pub fn default_state_dir() -> Option<PathBuf> {
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").and_then(non_empty) {
        return Some(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").and_then(non_empty) {
        return Some(d.join("wakuprof"));
    }
    std::env::var_os("HOME")
        .and_then(non_empty)
        .map(|h| h.join(".local/state/wakuprof"))
}

/// The host id stored in `state_dir/host-id`, generated (a random UUID v4) on first use.
pub fn host_id(state_dir: &Path) -> Result<String, Error> {
    std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
    let path = state_dir.join("host-id");
    if let Some(id) = read_id(&path)? {
        return Ok(id);
    }
    let id = random_uuid()?;
    let tmp = state_dir.join(format!("host-id.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    writeln!(f, "{id}").map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    // A hard link creates the name only if it is still free: of two processes starting together,
    // both end up with the id that won.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_id(&path)? {
            Some(won) => Ok(won),
            None => {
                std::fs::write(&path, format!("{id}\n")).map_err(|e| Error::io(&path, e))?;
                Ok(id)
            }
        },
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The id in `path`, if the file holds one.
fn read_id(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim();
            let valid = !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            Ok(valid.then(|| id.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// A random UUID (version 4) from the kernel's random source.
pub fn random_uuid() -> Result<String, Error> {
    let src = Path::new("/dev/urandom");
    let mut b = [0u8; 16];
    File::open(src)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io(src, e))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = host_id(dir.path()).expect("made");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "UUID v4: {a}");
        assert_eq!(host_id(dir.path()).expect("read"), a);
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(host_id(other.path()).expect("made"), a);
    }

    #[test]
    fn an_empty_host_id_file_is_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("host-id"), "").expect("writes");
        let id = host_id(dir.path()).expect("made");
        assert_eq!(id.len(), 36);
        assert_eq!(host_id(dir.path()).expect("read"), id);
    }
}
