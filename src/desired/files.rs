//! Finds and reads the state files: regular files inside the state directory, under a size cap,
//! decoded as UTF-8 with the first bad byte positioned.
//!
//! The directory comes from a pull request that anyone may open, and CI runs `validate` on it:
//! a link to a runner's secret, `/dev/zero` or a FIFO must not be read. Links are followed only
//! while they stay inside the directory (a Kubernetes ConfigMap's `..data` does); other file
//! kinds are refused before they are opened.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::position::Pos;

/// The default cap on one state file's size: 16 MiB, half again the 100,000-rule benchmark
/// state written as one file (11 MB). The YAML library holds a file's whole event stream and
/// tree, tens of bytes per byte of dense input, so the cap is what bounds a hostile file's memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a state file could not be read as text; the position is where its first bad byte is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub pos: Pos,
    pub message: String,
}

impl Refusal {
    fn at_start(message: impl Into<String>) -> Refusal {
        Refusal {
            pos: Pos { line: 1, column: 1 },
            message: message.into(),
        }
    }
}

/// A state file found in the directory: its text, or why it cannot be read.
#[derive(Debug)]
pub struct StateFile {
    pub path: PathBuf,
    pub text: Result<String, Refusal>,
}

/// A state file found in the directory and not read yet: admitted, or refused by its kind or
/// by where it leads.
#[derive(Debug)]
pub struct Found {
    pub path: PathBuf,
    admitted: Result<(), Refusal>,
}

impl Found {
    /// Reads the file with `max_bytes` as the cap.
    pub fn read(self, max_bytes: u64) -> StateFile {
        let text = self.admitted.and_then(|()| read(&self.path, max_bytes));
        StateFile {
            path: self.path,
            text,
        }
    }
}

/// Every `*.yaml`/`*.yml` file under `dir`, in sorted path order. Hidden entries (editors' swap
/// files, `.git`, a ConfigMap's `..2026_…` folders reached only through its links) are skipped.
/// Only a failure to list the directory itself is an error; each file's own problem is reported
/// with the file.
pub fn find_state_files(dir: &Path) -> std::io::Result<Vec<Found>> {
    let root = fs::canonicalize(dir)?;
    let mut found = Vec::new();
    let mut visited = HashSet::from([root.clone()]);
    walk(dir, &root, &mut visited, &mut found)?;
    found.sort_by(|a: &(PathBuf, _), b| a.0.cmp(&b.0));
    Ok(found
        .into_iter()
        .map(|(path, admitted)| Found { path, admitted })
        .collect())
}

/// Every state file under `dir` ([`find_state_files`]), read with `max_bytes` as the cap.
pub fn read_state_files(dir: &Path, max_bytes: u64) -> std::io::Result<Vec<StateFile>> {
    Ok(find_state_files(dir)?
        .into_iter()
        .map(|found| found.read(max_bytes))
        .collect())
}

fn is_state_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Collects the state files below `dir`, each admitted or refused by its kind and where it leads.
fn walk(
    dir: &Path,
    root: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<(PathBuf, Result<(), Refusal>)>,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type()?;
        let target = if kind.is_symlink() {
            match fs::canonicalize(&path) {
                Ok(target) if target.starts_with(root) => target,
                Ok(target) => {
                    // Said only for what would have been read: a link to outside named like a
                    // state file, or to a folder. The target is not named: it is not ours to show.
                    if is_state_file(&path) || target.is_dir() {
                        let refusal = Refusal::at_start(
                            "a symbolic link to outside the state directory; it is not followed",
                        );
                        out.push((path, Err(refusal)));
                    }
                    continue;
                }
                Err(_) => {
                    if is_state_file(&path) {
                        out.push((path, Err(Refusal::at_start("a broken symbolic link"))));
                    }
                    continue;
                }
            }
        } else {
            path.clone()
        };
        let meta = fs::metadata(&target)?;
        if meta.is_dir() {
            // A link back up the tree would otherwise be walked for ever.
            let canonical = if kind.is_symlink() {
                target
            } else {
                fs::canonicalize(&path)?
            };
            if visited.insert(canonical) {
                walk(&path, root, visited, out)?;
            }
        } else if is_state_file(&path) {
            out.push((path, admit(&meta)));
        }
    }
    Ok(())
}

/// Admits a regular file; anything else would block or never end when read.
fn admit(meta: &fs::Metadata) -> Result<(), Refusal> {
    if meta.is_file() {
        return Ok(());
    }
    #[cfg(unix)]
    let kind = {
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        }
    };
    #[cfg(not(unix))]
    let kind = "not a regular file";
    Err(Refusal::at_start(format!(
        "{kind}: only regular files are read as state files"
    )))
}

/// Reads one file, at most `max_bytes` of it, and decodes it; refused unless a regular file.
pub fn read(path: &Path, max_bytes: u64) -> Result<String, Refusal> {
    let cannot = |e: std::io::Error| Refusal::at_start(format!("cannot read the file: {e}"));
    let file = open_nonblocking(path).map_err(cannot)?;
    // Checked again on the open file: the path may have been swapped since it was listed.
    let meta = file.metadata().map_err(cannot)?;
    admit(&meta)?;
    let too_large = || {
        Refusal::at_start(format!(
            "the file is over the cap of {} MiB for one state file; raise it with --max-file-mib \
             or VALHALLA_MAX_FILE_MIB if it is meant to be this large",
            max_bytes / (1024 * 1024)
        ))
    };
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    decode(bytes)
}

/// Opens without blocking: a FIFO swapped in after the check must not hang the loader.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// UTF-8 text, without a byte-order mark. UTF-16 and UTF-32 (with or without a mark: their
/// ASCII is full of NUL bytes) and invalid UTF-8 are refused at the first bad byte.
pub fn decode(mut bytes: Vec<u8>) -> Result<String, Refusal> {
    const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";
    for (mark, name) in [
        (&b"\x00\x00\xfe\xff"[..], "UTF-32"),
        (b"\xff\xfe\x00\x00", "UTF-32"),
        (b"\xfe\xff", "UTF-16"),
        (b"\xff\xfe", "UTF-16"),
    ] {
        if bytes.starts_with(mark) {
            return Err(Refusal::at_start(format!(
                "the file is {name}: state files must be UTF-8"
            )));
        }
    }
    if bytes.starts_with(UTF8_BOM) {
        bytes.drain(..UTF8_BOM.len());
    }
    // `contains` on bytes is a vectorised search (the byte-by-byte `position` was a fifth of a
    // watch pass); the position is only looked for in a file that has one.
    if bytes.contains(&0)
        && let Some(nul) = bytes.iter().position(|b| *b == 0)
    {
        return Err(Refusal {
            pos: position_of(&bytes, nul),
            message: "a NUL byte: state files must be UTF-8 text (is this file UTF-16 or UTF-32?)".into(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        Refusal {
            pos: position_of(bytes, at),
            message: format!(
                "invalid UTF-8 (byte 0x{:02x}): state files must be UTF-8",
                bytes[at]
            ),
        }
    })
}

/// The 1-based line and column (in characters) of byte `at`, whose prefix is valid UTF-8.
fn position_of(bytes: &[u8], at: usize) -> Pos {
    let prefix = String::from_utf8_lossy(&bytes[..at]);
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line: prefix.matches('\n').count() + 1,
        column: prefix[line_start..].chars().count() + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utf8_byte_order_mark_is_dropped() {
        assert_eq!(
            decode(b"\xef\xbb\xbfversion: 1\n".to_vec()).unwrap(),
            "version: 1\n"
        );
    }

    #[test]
    fn other_encodings_and_bad_bytes_are_positioned() {
        let utf16: Vec<u8> = "version: 1".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut with_mark = b"\xff\xfe".to_vec();
        with_mark.extend(&utf16);
        assert!(decode(with_mark).unwrap_err().message.contains("UTF-16"));
        let no_mark = decode(utf16).unwrap_err();
        assert_eq!(no_mark.pos, Pos { line: 1, column: 2 });
        let bad = decode(b"version: 1\nx: caf\xc3\xa9 \xff\n".to_vec()).unwrap_err();
        assert_eq!(bad.pos, Pos { line: 2, column: 9 });
        assert!(bad.message.contains("0xff"), "{}", bad.message);
    }
}
