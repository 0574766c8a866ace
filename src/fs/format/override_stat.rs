//! The rootless owner/mode override, containers-storage's `user.containers.override_stat`:
//! `UID:GID:MODE[:TYPE]`, parsed and formatted here for the driver and the image code alike.

/// Name of the override xattr.
pub const XATTR: &str = "user.containers.override_stat";

/// A special file stored as an empty regular file because it could not be made rootless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Char,
    Block,
    Fifo,
}

/// Owner and mode recorded by an unprivileged unpacker or by the driver rootless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatOverride {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including suid/sgid/sticky.
    pub perm: u32,
    /// Device type and number (`libc::makedev`) of a special file stored as an empty file.
    pub dev: Option<(Special, u64)>,
}

/// Parse `UID:GID:MODE[:TYPE]`: MODE octal (only the permission bits are kept), TYPE
/// `char-MAJ-MIN`, `block-MAJ-MIN`, `pipe` or `fifo-0-0` for special files, or a plain type
/// word (`file`, `dir`, ...), which changes nothing. Trailing NULs (C writers) are ignored.
pub fn parse(value: &[u8]) -> Option<StatOverride> {
    let s = std::str::from_utf8(value)
        .ok()?
        .trim_end_matches('\0')
        .trim();
    let mut parts = s.splitn(4, ':');
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    let perm = u32::from_str_radix(parts.next()?, 8).ok()? & 0o7777;
    let dev = match parts.next() {
        Some("pipe") => Some((Special::Fifo, 0)),
        Some(t) => {
            let mut p = t.split('-');
            let kind = match p.next()? {
                "char" => Some(Special::Char),
                "block" => Some(Special::Block),
                "fifo" => Some(Special::Fifo),
                _ => None,
            };
            match kind {
                // A fifo has no device number, whatever the value says.
                Some(Special::Fifo) => Some((Special::Fifo, 0)),
                Some(k) => {
                    let major: u32 = p.next()?.parse().ok()?;
                    let minor: u32 = p.next()?.parse().ok()?;
                    Some((k, libc::makedev(major, minor)))
                }
                None => None,
            }
        }
        None => None,
    };
    Some(StatOverride {
        uid,
        gid,
        perm,
        dev,
    })
}

/// Format an override as [`parse`] reads it (special files as containers-storage writes them).
pub fn format(o: &StatOverride) -> String {
    let mut s = format!("{}:{}:{:04o}", o.uid, o.gid, o.perm & 0o7777);
    match o.dev {
        Some((Special::Fifo, _)) => s.push_str(":pipe"),
        Some((kind, dev)) => {
            let k = if kind == Special::Char {
                "char"
            } else {
                "block"
            };
            s.push_str(&format!(":{}-{}-{}", k, libc::major(dev), libc::minor(dev)));
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        let o = parse(b"0:5:4755").ok_or("0:5:4755 does not parse")?;
        assert_eq!((o.uid, o.gid, o.perm, o.dev), (0, 5, 0o4755, None));
        assert_eq!(format(&o), "0:5:4755");
        let d = parse(b"0:0:0660:char-1-3").ok_or("a device does not parse")?;
        assert_eq!(d.dev, Some((Special::Char, libc::makedev(1, 3))));
        assert_eq!(format(&d), "0:0:0660:char-1-3");
        let f = parse(b"1:2:0644:fifo-0-0").ok_or("fifo does not parse")?;
        assert_eq!(f.dev, Some((Special::Fifo, 0)));
        assert_eq!(format(&f), "1:2:0644:pipe");
        assert_eq!(parse(b"1:2:0644:pipe"), Some(f));
        assert_eq!(parse(b"1:2:0644:fifo-1-2"), Some(f));
        assert_eq!(parse(b"1:2:0644:file").map(|o| o.dev), Some(None));
        assert_eq!(parse(b"0:0:0100755\0").map(|o| o.perm), Some(0o755));
        assert!(parse(b"garbage").is_none());
        Ok(())
    }
}
