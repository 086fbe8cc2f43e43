//! The process limits that both sides of a c10k measurement set before they open many
//! sockets: the server (`c10k serve`, which derives `--max-connections` from it) and the
//! load generator (`c10k load`, whose client processes each hold thousands). One small
//! crate, so that neither side depends on the other for it.

#![deny(missing_docs)]

/// Raises this process's soft open-files limit to its hard limit (as Go's runtime and
/// nginx's `worker_rlimit_nofile` do); returns the limit now in force (`None` if it
/// cannot be read).
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit; getrlimit only writes into it.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit built from the one read above; setrlimit only
        // reads it.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
        if set == 0 {
            return Some(raised.rlim_cur as u64);
        }
    }
    Some(limit.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_in_force_is_the_hard_limit_afterwards() {
        let now = super::raise_open_files_limit().expect("readable on Linux");
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(now, limit.rlim_cur as u64);
    }
}
