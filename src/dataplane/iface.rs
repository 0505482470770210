//! Facts about network interfaces: index, state, MAC, queue count, IPv4 addresses, and
//! whether their received frames can carry partial checksums.

use std::ffi::CString;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use super::DataplaneError;

/// Interface index of `name`, or a clear error if it does not exist.
pub fn ifindex(name: &str) -> Result<u32, DataplaneError> {
    let c = CString::new(name).map_err(|_| DataplaneError::NoSuchInterface(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(DataplaneError::NoSuchInterface(name.to_string()));
    }
    Ok(idx)
}

fn sysfs(name: &str, file: &str) -> Result<String, DataplaneError> {
    fs::read_to_string(format!("/sys/class/net/{name}/{file}"))
        .map(|s| s.trim().to_string())
        .map_err(|_| DataplaneError::NoSuchInterface(name.to_string()))
}

/// Drivers of devices with a bus device whose frames need not come from a wire: paravirtual
/// NICs, whose host may hand the guest a frame with a TCP/UDP checksum it has not finished
/// (virtio's `NEEDS_CSUM`, Xen's `csum_blank`), as a local stack does; and the kernel's
/// simulated NIC, whose peer is a local stack.
const PARAVIRTUAL_DRIVERS: &[&str] = &[
    "virtio_net",
    "vif",
    "xen-netfront",
    "hv_netvsc",
    "vmxnet3",
    "netdevsim",
];

/// Whether frames received on an interface can carry a partial TCP/UDP checksum (see
/// `packet::offload`), and why: `(possible, what the interface is)`.
///
/// Only a local sender leaves a checksum partial, so frames that crossed a wire cannot:
/// an interface with a bus device (`/sys/class/net/NAME/device`) whose driver is not a
/// paravirtual one receives from a wire. Every other interface (veth, tun/tap, bridges,
/// bonds, VLANs, paravirtual NICs, or a driver that cannot be read) may deliver them.
/// `sys_net` is `/sys/class/net` (a test's copy otherwise).
pub fn partial_checksums_in(sys_net: &Path, name: &str) -> (bool, String) {
    let dev = sys_net.join(name).join("device");
    if !dev.exists() {
        return (true, "virtual".into());
    }
    let driver = fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()));
    match driver {
        Some(d) if PARAVIRTUAL_DRIVERS.contains(&d.as_str()) => (true, d),
        Some(d) => (false, d),
        None => (true, "unknown driver".into()),
    }
}

/// [`partial_checksums_in`] of the running system.
pub fn partial_checksums(name: &str) -> (bool, String) {
    partial_checksums_in(Path::new("/sys/class/net"), name)
}

/// Whether the interface is administratively up.
pub fn is_up(name: &str) -> Result<bool, DataplaneError> {
    let flags = sysfs(name, "flags")?;
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
    Ok(flags & (libc::IFF_UP as u32) != 0)
}

/// The interface's MAC address.
pub fn mac(name: &str) -> Result<[u8; 6], DataplaneError> {
    parse_mac(&sysfs(name, "address")?)
        .ok_or_else(|| DataplaneError::NoSuchInterface(name.to_string()))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Number of RX queues the kernel exposes for the interface.
pub fn rx_queues(name: &str) -> Result<u32, DataplaneError> {
    let dir = fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map_err(|_| DataplaneError::NoSuchInterface(name.to_string()))?;
    let n = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n.max(1) as u32)
}

/// IPv4 addresses configured on `name`.
pub fn ipv4_addrs(name: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `ifap`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points at a sockaddr owned by the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if n.to_bytes() != name.as_bytes() || family != libc::AF_INET as u16 {
            continue;
        }
        // SAFETY: family is AF_INET, so the sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
    }
    // SAFETY: `ifap` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// Effective capabilities of this process (bit mask from /proc/self/status).
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// CAP_NET_ADMIN.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_IPC_LOCK.
pub const CAP_IPC_LOCK: u32 = 14;
/// CAP_SYS_ADMIN.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_NET_RAW.
pub const CAP_NET_RAW: u32 = 13;
/// CAP_BPF.
pub const CAP_BPF: u32 = 39;
/// CAP_PERFMON (the verifier allows pointer arithmetic in the program only with it).
pub const CAP_PERFMON: u32 = 38;

/// Whether capability `cap` is in the effective set.
pub fn has_cap(cap: u32) -> bool {
    effective_caps() & (1u64 << cap) != 0
}

/// Current RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` for unlimited).
pub fn memlock_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit the call writes into.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/class/net`: a veth (no device), a physical NIC, a virtio NIC and a
    /// device whose driver link is missing.
    #[test]
    fn partial_checksums_are_expected_except_from_a_wire() {
        let root = std::env::temp_dir().join(format!("xnat-sysnet-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let mk = |name: &str, driver: Option<&str>| {
            let d = root.join(name);
            fs::create_dir_all(&d).unwrap();
            if let Some(drv) = driver {
                let dev = d.join("device");
                fs::create_dir_all(&dev).unwrap();
                let target = root.join("drivers").join(drv);
                fs::create_dir_all(&target).unwrap();
                std::os::unix::fs::symlink(&target, dev.join("driver")).unwrap();
            }
        };
        mk("veth0", None);
        mk("ens1f0", Some("ixgbe"));
        mk("eth0", Some("virtio_net"));
        mk("odd0", None);
        fs::create_dir_all(root.join("odd0").join("device")).unwrap();
        let got = |n: &str| partial_checksums_in(&root, n);
        assert_eq!(got("veth0"), (true, "virtual".to_string()));
        assert_eq!(got("ens1f0"), (false, "ixgbe".to_string()));
        assert_eq!(got("eth0"), (true, "virtio_net".to_string()));
        assert_eq!(got("odd0"), (true, "unknown driver".to_string()));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01"),
            Some([2, 0, 0x0a, 0xff, 0, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }

    #[test]
    fn missing_interface_is_named() {
        let e = ifindex("xnat-nope0").unwrap_err();
        assert!(e.to_string().contains("xnat-nope0"), "{e}");
    }
}
