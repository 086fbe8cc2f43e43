//! Whether the SQLite file can be written, told to the operator without flooding the log:
//! each class of write failure is logged when it first happens, then at most once per
//! [`LOG_EVERY`] with how many there were since, and once when writes work again. Also
//! the repair of `-wal` / `-shm` files left without the write permission their database
//! file has (see the module docs of `sqlite.rs`).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use c10k_core::store::StoreError;
use rusqlite::ErrorCode;

/// The shortest time between two log lines about one class of failure.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);

/// Kinds of write failure, each logged on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FailureClass {
    /// Another connection or process held the write lock past the wait allowed: passing.
    Busy,
    /// The file, its directory or its `-wal` / `-shm` cannot be written.
    ReadOnly,
    /// The file (or its `-wal` / `-shm`) cannot be opened.
    CannotOpen,
    /// The disk is full.
    DiskFull,
    /// The disk reported an I/O error.
    Io,
    /// The file is not a database, or is damaged.
    Corrupt,
    /// Anything else.
    Other,
}

impl FailureClass {
    /// The class of a driver error.
    pub(crate) fn of(e: &rusqlite::Error) -> FailureClass {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => FailureClass::Busy,
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => FailureClass::ReadOnly,
            Some(ErrorCode::CannotOpen) => FailureClass::CannotOpen,
            Some(ErrorCode::DiskFull) => FailureClass::DiskFull,
            Some(ErrorCode::SystemIoFailure) => FailureClass::Io,
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => FailureClass::Corrupt,
            _ => FailureClass::Other,
        }
    }

    /// Whether a connection that failed so must be replaced: SQLite opens a file it
    /// cannot write read-only for good, and a failed open of `-wal` / `-shm` sticks to the
    /// connection. A lock wait that ran out says nothing against the connection.
    pub(crate) fn needs_fresh_connection(self) -> bool {
        !matches!(self, FailureClass::Busy | FailureClass::Other)
    }

    fn name(self) -> &'static str {
        match self {
            FailureClass::Busy => "write lock held elsewhere",
            FailureClass::ReadOnly => "read-only",
            FailureClass::CannotOpen => "cannot open",
            FailureClass::DiskFull => "disk full",
            FailureClass::Io => "I/O error",
            FailureClass::Corrupt => "not a database",
            FailureClass::Other => "other",
        }
    }
}

/// The write failures seen since writes last worked, and when each class was logged.
#[derive(Debug, Default)]
pub(crate) struct Health(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// Failures since the last write that worked: when the first came, how many.
    failing: Option<(Instant, u64)>,
    /// Per class: when it was last logged, and how many came since without a line.
    logged: HashMap<FailureClass, (Instant, u64)>,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters and timestamps set in single statements: usable after a panic.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The probe at open could not write: said at once, with what to do.
    pub(crate) fn failed_at_open(&self, path: &Path, class: FailureClass, error: &StoreError) {
        let mut state = self.lock();
        let now = Instant::now();
        state.failing = Some((now, 0));
        state.logged.insert(class, (now, 0));
        tracing::warn!(
            path = %path.display(),
            class = class.name(),
            "the database cannot be written ({error}); serving what it holds, and posts get 503 \
             until it can: make the file, its -wal and -shm files and its directory writable by \
             this user (or free disk space); no restart is needed, GET /readyz says when it works"
        );
    }

    /// A write failed: logged if its class was not logged within [`LOG_EVERY`].
    pub(crate) fn failed(&self, path: Option<&Path>, class: FailureClass, error: &StoreError) {
        let mut state = self.lock();
        let now = Instant::now();
        let failing = state.failing.get_or_insert((now, 0));
        failing.1 += 1;
        let path = path.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf);
        match state.logged.get_mut(&class) {
            Some((at, unlogged)) if now.duration_since(*at) < LOG_EVERY => *unlogged += 1,
            Some((at, unlogged)) => {
                tracing::warn!(
                    path = %path.display(),
                    class = class.name(),
                    "{} more database write failures of this kind in the last {} s; the latest: {error}",
                    *unlogged + 1,
                    now.duration_since(*at).as_secs()
                );
                *at = now;
                *unlogged = 0;
            }
            None => {
                tracing::warn!(
                    path = %path.display(),
                    class = class.name(),
                    "a database write failed: {error} (failures of this kind are logged at most once a minute)"
                );
                state.logged.insert(class, (now, 0));
            }
        }
    }

    /// A write worked: if writes had been failing, that is logged once.
    pub(crate) fn succeeded(&self, path: Option<&Path>) {
        let mut state = self.lock();
        if let Some((since, failures)) = state.failing.take() {
            state.logged.clear();
            let path = path.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf);
            tracing::info!(
                path = %path.display(),
                "the database can be written again, after {failures} failed writes over {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }
}

/// Gives `PATH-wal` and `PATH-shm` the database file's permissions when they lack the
/// owner's write permission that it has and belong to the same owner: the state a server
/// started on a read-only file leaves (SQLite creates them with the database's mode), in
/// which the file made writable again still cannot be written. Changing a mode does not
/// disturb processes that have them open. Best effort: a failure is logged, and the open
/// that follows says what is wrong.
pub(crate) fn repair_sidecar_modes(path: &Path) {
    let Ok(db) = std::fs::metadata(path) else { return };
    if db.permissions().mode() & 0o200 == 0 {
        return;
    }
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let sidecar = PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&sidecar) else { continue };
        if meta.permissions().mode() & 0o200 != 0 || meta.uid() != db.uid() {
            continue;
        }
        let mode = db.permissions().mode() & 0o666;
        match std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => tracing::info!(
                file = %sidecar.display(),
                mode = format!("{mode:o}"),
                "gave a read-only SQLite side file its database's permissions, so that writes can resume"
            ),
            Err(e) => tracing::warn!(
                file = %sidecar.display(),
                "this SQLite side file cannot be written while its database can ({e}); make it writable"
            ),
        }
    }
}
