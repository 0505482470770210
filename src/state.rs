//! The table's state file seen from outside the table: one gateway per file (an exclusive
//! `flock` held for the life of the process). The file's layout, the take-over and what
//! became of the previous process's table ([`crate::table::Resume`]) belong to
//! [`crate::table::Table::with_state_file`].

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A locked state file. The lock goes with the process (also on SIGKILL).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Held open for the lock.
    _file: File,
}

impl StateFile {
    /// Creates the file's directory if missing (mode 0700), opens or creates the file
    /// (mode 0600) and locks it; refused when another process holds the lock.
    pub fn lock(path: &Path) -> Result<StateFile, String> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        format!(
                            "invalid --state-file = {shown:?}: cannot create {}: {e} (pass another --state-file PATH, or --no-state-file)",
                            dir.display()
                        )
                    })?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                format!(
                    "invalid --state-file = {shown:?}: cannot open it: {e} (pass another --state-file PATH, or --no-state-file)"
                )
            })?;
        // The translations of every connection through the gateway: root only.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                format!(
                    "invalid --state-file = {shown:?}: another xnat is running with this state file (it holds the lock); give each gateway its own --state-file PATH"
                )
            } else {
                format!("invalid --state-file = {shown:?}: cannot lock it: {e}")
            });
        }
        Ok(StateFile {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{nat_config, FileConfig, NatFlags};
    use crate::nat::make_table;
    use crate::table::Resume;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xnat-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn config(path: &Path, size: u64) -> crate::config::NatConfig {
        let flags = NatFlags {
            snat: vec!["198.19.2.1".into()],
            table_size: Some(size),
            state_file: Some(path.to_path_buf()),
            ..Default::default()
        };
        nat_config(&FileConfig::default(), &flags).expect("config")
    }

    #[test]
    fn a_second_holder_is_refused_and_the_directory_is_private() {
        let d = dir("lock");
        let p = d.join("sub/table");
        let first = StateFile::lock(&p).expect("first lock");
        let mode = |q: &Path| std::fs::metadata(q).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.join("sub")), 0o700);
        assert_eq!(mode(&p), 0o600);
        let e = StateFile::lock(&p).unwrap_err();
        assert!(
            e.contains("another xnat is running with this state file")
                && e.contains(&p.display().to_string()),
            "{e}"
        );
        drop(first);
        StateFile::lock(&p).expect("free again once the holder is gone");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_different_table_size_carries_the_connections_over_and_says_why() {
        let d = dir("size");
        let p = d.join("table");
        let st = StateFile::lock(&p).unwrap();
        let (t, resume) = make_table(&config(&p, 1024)).unwrap();
        assert_eq!(resume, Resume::New);
        let org = crate::table::Tuple::new(0xC612_0002, 40000, 0xC613_0002, 80, 6);
        let xlate = crate::table::Tuple::new(0xC613_0201, 1025, 0xC613_0002, 80, 6);
        t.insert_pair(&org, &xlate, crate::table::ConnState::TcpEstablished, 10)
            .expect("insert");
        drop((t, st));

        // Same size: taken over.
        let st = StateFile::lock(&p).unwrap();
        let (t, resume) = make_table(&config(&p, 1024)).unwrap();
        assert_eq!(resume, Resume::Resumed);
        assert_eq!(t.len(), 1, "the connection was taken over");
        drop((t, st));

        // Another size: the connection is carried into a new table, and the reason names
        // the sizes.
        let st = StateFile::lock(&p).unwrap();
        let (t, resume) = make_table(&config(&p, 4096)).unwrap();
        assert_eq!(t.len(), 1, "the connection was carried over");
        assert_eq!(t.lookup(&org, 11).map(|h| h.xlate), Some(xlate));
        match resume {
            Resume::Migrated {
                reason,
                found: 1,
                kept: 1,
            } => {
                assert!(reason.contains("table size changed"), "{reason}")
            }
            o => panic!("{o:?}"),
        }
        drop((t, st));

        // Garbage of any length: started empty, never a crash.
        std::fs::write(&p, vec![0xA5u8; 10_000]).unwrap();
        let st = StateFile::lock(&p).unwrap();
        let (t, resume) = make_table(&config(&p, 4096)).unwrap();
        assert_eq!(t.len(), 0);
        assert!(
            matches!(&resume, Resume::Reset { reason } if reason.contains("does not hold a table")),
            "{resume:?}"
        );
        drop((t, st));

        // A table of this size from another boot (the boot id in its header differs).
        let st = StateFile::lock(&p).unwrap();
        drop(make_table(&config(&p, 4096)).unwrap());
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 0xFF; // inside the boot id (bytes 32..68 of the header)
        std::fs::write(&p, bytes).unwrap();
        let (t, resume) = make_table(&config(&p, 4096)).unwrap();
        assert!(
            matches!(&resume, Resume::Reset { reason } if reason.contains("rebooted")),
            "{resume:?}"
        );
        drop((t, st));
        let _ = std::fs::remove_dir_all(&d);
    }
}
