//! The service manager's readiness protocol (`sd_notify`, without libsystemd): with
//! `Type=notify`, systemd considers the gateway started only once it says `READY=1`, i.e.
//! once every worker runs and the control socket answers. Until then `systemctl start`
//! waits and `systemctl reload` is held back, instead of reaching a half-started process.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the socket named by `$NOTIFY_SOCKET`, if any.
/// Returns whether it was sent; without the variable (not under systemd) it does nothing.
pub fn notify(state: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&path, state),
        None => false,
    }
}

/// Sends `state` to the notification socket `path` (`@name`: an abstract socket).
fn notify_to(path: &std::ffi::OsStr, state: &str) -> bool {
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        // An abstract socket (the name after '@').
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            match std::os::unix::net::SocketAddr::from_abstract_name(name) {
                Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr),
                Err(e) => Err(e),
            }
        }
        None => sock.send_to(state.as_bytes(), std::path::Path::new(path)),
    };
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not tell the service manager: {state}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_reaches_the_socket_named_by_notify_socket() {
        let dir = std::env::temp_dir().join(format!("xnat-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(super::notify_to(path.as_os_str(), "READY=1"));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // An abstract socket, as some service managers give.
        let name = format!("xnat-notify-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx2 = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        assert!(super::notify_to(
            std::ffi::OsStr::new(&format!("@{name}")),
            "READY=1"
        ));
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!super::notify_to(
            std::ffi::OsStr::new("/nonexistent/xnat.sock"),
            "READY=1"
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
