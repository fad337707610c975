//! systemd socket activation: listening sockets a service manager opened and passed down
//! (`LISTEN_FDS` descriptors from 3 on, for the process `LISTEN_PID`, named by
//! `LISTEN_FDNAMES`), used for the configured binds instead of opening new ones.
//!
//! Each bind, in the order of the configuration, takes the first passed socket named after its
//! app (`FileDescriptorName=` in the `.socket` unit); failing that, the next one whose name is no
//! app's. Its kind (TCP or Unix) must be the bind's. A bind left without one opens its own. The
//! variables are removed from the environment, so the workers never see them.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use crate::config::BindAddr;

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A passed socket, as a bind takes it.
pub(crate) enum Passed {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// The sockets passed to this process, not yet taken by a bind.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<Option<(String, OwnedFd)>>,
}

impl Inherited {
    /// Takes the sockets passed to this process, if any, and clears the variables.
    pub fn from_env() -> Inherited {
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        // Called before the runtime starts: no other thread reads the environment.
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        let Some(count) = count.and_then(|n| n.parse::<RawFd>().ok()).filter(|_| ours) else {
            return Inherited::default();
        };
        let mut names = names.split(':');
        let sockets = (LISTEN_FDS_START..LISTEN_FDS_START + count)
            .map(|fd| {
                let name = names.next().unwrap_or_default().to_owned();
                // SAFETY: the service manager hands these descriptors to this process, which has
                // not used them; each is owned once, here.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                // Not for the workers.
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                // SAFETY: F_SETFD on a descriptor this process owns.
                unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
                Some((name, fd))
            })
            .collect();
        Inherited { sockets }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sockets.iter().all(Option::is_none)
    }

    /// The passed socket for a bind of `app` at `addr`, if one is left; an error if the one it
    /// would take is of the other kind.
    pub(crate) fn take(
        &mut self,
        app: &str,
        addr: &BindAddr,
        app_names: &[&str],
    ) -> Result<Option<Passed>, String> {
        let position = self
            .sockets
            .iter()
            .position(|s| s.as_ref().is_some_and(|(name, _)| name == app))
            .or_else(|| {
                self.sockets.iter().position(|s| {
                    s.as_ref()
                        .is_some_and(|(name, _)| !app_names.contains(&name.as_str()))
                })
            });
        let Some((name, fd)) = position.and_then(|at| self.sockets[at].take()) else {
            return Ok(None);
        };
        let unix = socket_family(&fd) == Some(libc::AF_UNIX as libc::sa_family_t);
        let passed = match (addr, unix) {
            (BindAddr::Tcp(_), false) => Passed::Tcp(TcpListener::from(fd)),
            (BindAddr::Unix(_), true) => Passed::Unix(UnixListener::from(fd)),
            _ => {
                let kind = if unix {
                    "a Unix socket"
                } else {
                    "not a Unix socket"
                };
                return Err(format!(
                    "app {app}: bind {addr}: the socket systemd passed as {name:?} is {kind}"
                ));
            }
        };
        Ok(Some(passed))
    }
}

/// The address family of a socket, from getsockname(2).
fn socket_family(fd: &OwnedFd) -> Option<libc::sa_family_t> {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_storage is plain data; all zeros is a valid value of it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname(2) writes at most `len` bytes into `addr`, which is that large.
    let done = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    (done == 0).then_some(addr.ss_family)
}
