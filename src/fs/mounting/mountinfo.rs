//! /proc/self/mountinfo: its lines parsed, with the kernel's octal escapes undone.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo: the fields its readers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted filesystem.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its type (`fuse.strata`, `overlay`).
    pub fs_type: String,
}

/// Undoes mountinfo's escapes: a `\` and three octal digits is that byte (`\040` space,
/// `\011` tab, `\012` newline, `\134` backslash).
pub fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .try_fold(0u32, |v, c| {
                    (b'0'..=b'7')
                        .contains(c)
                        .then(|| v * 8 + u32::from(c - b'0'))
                })
                .and_then(|v| u8::try_from(v).ok())
        });
        match octal {
            Some(v) if b[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// Parses one mountinfo line (`ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - TYPE
/// SOURCE SUPEROPTS`).
pub fn parse_line(line: &str) -> Option<Mount> {
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
    Some(Mount {
        device: f.get(2)?.to_string(),
        mount_point: PathBuf::from(unescape(f.get(4)?)),
        fs_type: unescape(f.get(sep + 1)?).to_string_lossy().into_owned(),
    })
}

/// The mounts of this process's mount namespace, in mountinfo's order (the last mount on a
/// path is the one seen there).
pub fn mounts() -> io::Result<Vec<Mount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_line).collect())
}

/// Whether something is mounted on exactly `path` (false when mountinfo cannot be read).
pub fn is_mountpoint(path: &Path) -> bool {
    mounts().is_ok_and(|m| m.iter().any(|m| m.mount_point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_fields() {
        assert_eq!(unescape(r"/a\040b\011c\012d\134e"), "/a b\tc\nd\\e");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
        assert_eq!(unescape(r"/x\777y"), r"/x\777y");
        assert_eq!(unescape(r"\\134"), r"\\");
        let l = r"36 35 0:52 / /mnt/with\040space rw,nosuid shared:1 master:2 - fuse.strata strata rw,user_id=0";
        assert_eq!(
            parse_line(l),
            Some(Mount {
                device: "0:52".into(),
                mount_point: PathBuf::from("/mnt/with space"),
                fs_type: "fuse.strata".into(),
            })
        );
        assert_eq!(parse_line("36 35 0:52 / /m rw").map(|m| m.fs_type), None);
        assert!(is_mountpoint(Path::new("/")) || mounts().is_err());
    }
}
