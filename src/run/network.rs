//! Container networking: `-p` port specs, the /etc/hosts, /etc/hostname and
//! /etc/resolv.conf files a container gets (kept in its directory and bound in, never written
//! into the image), and pasta (Debian `passt`), which gives a private network namespace
//! outbound access and forwards the published host ports into it, as rootless podman does.

use super::{Result, RunError};
use crate::store::PortSpec;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The network modes of `--network`.
pub const MODES: [&str; 3] = ["host", "none", "private"];

/// The address pasta answers DNS queries on when the host's resolver is a loopback address.
const DNS_FORWARD: &str = "169.254.1.1";

/// Parse `[IP:]HOSTPORT:CTRPORT[/tcp|/udp]`.
pub fn parse_port(spec: &str) -> Result<PortSpec> {
    let bad = |why: &str| RunError::Invalid(format!("invalid port spec {spec:?}: {why}"));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) if p == "tcp" || p == "udp" => (r, p.to_string()),
        Some(_) => return Err(bad("the protocol must be tcp or udp")),
        None => (spec, "tcp".to_string()),
    };
    let (addr, ctr) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected [IP:]HOSTPORT:CTRPORT"))?;
    let (ip, host) = match addr.rsplit_once(':') {
        Some((ip, h)) => (Some(ip.trim_matches(['[', ']']).to_string()), h),
        None => (None, addr),
    };
    if let Some(ip) = &ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(bad("not an IP address"));
    }
    let port = |p: &str| -> Result<u16> {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(&format!("{p:?} is not a port number")))
    };
    Ok(PortSpec {
        host_ip: ip.filter(|i| !i.is_empty()),
        host_port: port(host)?,
        container_port: port(ctr)?,
        proto,
    })
}

/// `0.0.0.0:18080->8080/tcp`, as Docker's PORTS column.
pub fn port_text(p: &PortSpec) -> String {
    format!(
        "{}:{}->{}/{}",
        p.host_ip.as_deref().unwrap_or("0.0.0.0"),
        p.host_port,
        p.container_port,
        p.proto
    )
}

/// Refuse early when a private network cannot be made here.
pub fn check_private() -> Result<()> {
    if find("pasta").is_none() {
        return Err(RunError::Unavailable(
            "--network private and -p need pasta (Debian package passt), which is not installed"
                .into(),
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Err(RunError::Unavailable(format!(
            "cannot open /dev/net/tun, which pasta needs for --network private and -p: {e}"
        )));
    }
    Ok(())
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn loopback_resolver(conf: &str) -> bool {
    conf.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some("nameserver")
            && f.next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
    })
}

/// Write `hostname`, `hosts` and `resolv.conf` for a container into `dir`.
pub fn write_etc_files(dir: &Path, hostname: &str, network: &str) -> Result<()> {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(RunError::io(format!("write {}", p.display())))
    };
    write("hostname", format!("{hostname}\n"))?;
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let hosts = if network == "host" {
        format!("{host_hosts}127.0.1.1\t{hostname}\n")
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        )
    };
    write("hosts", hosts)?;
    let mut resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if network == "private" && loopback_resolver(&resolv) {
        resolv = format!("nameserver {DNS_FORWARD}\n");
    }
    write("resolv.conf", resolv)
}

/// A running pasta serving a container's network namespace; stopped on drop.
pub struct Pasta {
    child: Child,
}

impl Pasta {
    /// Start pasta for the network (and user) namespace of process `pid` with `ports`
    /// forwarded from the host; returns once it has configured the namespace. It gets
    /// SIGKILL if the caller dies. Its messages go to `dir/pasta.log`.
    pub fn start(pid: u32, ports: &[PortSpec], dir: &Path) -> Result<Pasta> {
        let bin = find("pasta").ok_or_else(|| {
            RunError::Unavailable("pasta (Debian package passt) is not installed".into())
        })?;
        let pidfile = dir.join("pasta.pid");
        let logfile = dir.join("pasta.log");
        let _ = std::fs::remove_file(&pidfile);
        let log = std::fs::File::create(&logfile)
            .map_err(RunError::io(format!("create {}", logfile.display())))?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--foreground",
            "--quiet",
            "--config-net",
            "-T",
            "none",
            "-U",
            "none",
        ])
        .arg("--pid")
        .arg(&pidfile);
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if loopback_resolver(&resolv) {
            cmd.args(["--dns-forward", DNS_FORWARD]);
        }
        for proto in ["tcp", "udp"] {
            let flag = if proto == "tcp" { "-t" } else { "-u" };
            let mine: Vec<&PortSpec> = ports.iter().filter(|p| p.proto == proto).collect();
            if mine.is_empty() {
                cmd.args([flag, "none"]);
            }
            for p in mine {
                let spec = match &p.host_ip {
                    Some(ip) => format!("{ip}/{}:{}", p.host_port, p.container_port),
                    None => format!("{}:{}", p.host_port, p.container_port),
                };
                cmd.arg(flag).arg(spec);
            }
        }
        if super::idmap::is_real_root() {
            // As root, pasta drops to nobody and then cannot open /proc/PID/ns/*: give it the
            // network namespace as a file bound in a mount namespace of its own, and keep it root.
            let netns = dir.join("netns");
            std::fs::write(&netns, "").map_err(RunError::io("create the netns file"))?;
            crate::sys::process::bind_in_private_mount_ns(
                &mut cmd,
                &Path::new("/proc").join(pid.to_string()).join("ns/net"),
                &netns,
            )
            .map_err(RunError::io("pasta's network namespace file"))?;
            cmd.args(["--runas", "0", "--netns-only", "--netns"])
                .arg(&netns);
        } else {
            cmd.arg(pid.to_string());
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        crate::sys::process::kill_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(RunError::io(format!("run {}", bin.display())))?;
        let mut pasta = Pasta { child };
        let start = Instant::now();
        loop {
            if pidfile.is_file() {
                return Ok(pasta);
            }
            if let Ok(Some(st)) = pasta.child.try_wait() {
                let msg = std::fs::read_to_string(&logfile).unwrap_or_default();
                return Err(RunError::Unavailable(format!(
                    "pasta failed ({st}): {}",
                    msg.trim()
                )));
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(RunError::Unavailable(
                    "pasta did not set up the network within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() -> std::result::Result<(), RunError> {
        let p = parse_port("18080:8080")?;
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.proto.as_str()),
            (None, 18080, 8080, "tcp")
        );
        let p = parse_port("127.0.0.1:53:5353/udp")?;
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            (p.host_port, p.container_port, p.proto.as_str()),
            (53, 5353, "udp")
        );
        assert_eq!(port_text(&p), "127.0.0.1:53->5353/udp");
        for bad in [
            "8080",
            "x:80",
            "80:0",
            "1.2.3:80:80",
            "80:80/sctp",
            "70000:80",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
