//! Scratch databases on the MySQL/MariaDB and PostgreSQL servers that tests (and `c10k
//! bench`'s database cells) are given.
//!
//! A test that needs a server asks [`ScratchDatabase::create`]; it gets a database of its
//! own (MySQL: a new database; PostgreSQL: a new schema, selected through the URL's
//! `options=-csearch_path=...`), dropped when the guard is dropped, so tests run in
//! parallel and never see each other's rows.
//!
//! Which servers: the URLs in `C10K_TEST_MYSQL_URL` and `C10K_TEST_POSTGRES_URL`
//! (`.ci/run` sets both to the machine's services). Without one, the test prints
//! `skipped: ...` and passes; with `C10K_E2E_REQUIRED=1` (CI) a missing or unreachable
//! server fails the test instead, so CI cannot go green by skipping.

use std::sync::atomic::{AtomicUsize, Ordering};

use mysql::prelude::Queryable;

/// The database servers c10k has a store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// MySQL or MariaDB.
    MySql,
    /// PostgreSQL.
    Postgres,
}

impl ServerKind {
    /// The variable that gives the test server's URL.
    pub fn env_var(self) -> &'static str {
        match self {
            ServerKind::MySql => "C10K_TEST_MYSQL_URL",
            ServerKind::Postgres => "C10K_TEST_POSTGRES_URL",
        }
    }

    /// The URL of the machine's service, as `.ci/run` exports it.
    pub fn example_url(self) -> &'static str {
        match self {
            ServerKind::MySql => "mysql://root@127.0.0.1:3306/test",
            ServerKind::Postgres => "postgres://postgres@127.0.0.1:5432/test",
        }
    }
}

/// Whether a missing test server must fail the test (`C10K_E2E_REQUIRED=1`, as in CI).
pub fn required() -> bool {
    std::env::var("C10K_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// A database of one test's own; dropped with the guard.
#[derive(Debug)]
pub struct ScratchDatabase {
    kind: ServerKind,
    /// The server's URL, as given.
    server: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// A fresh database on the `kind` server, named after `label`; `None` (after printing
    /// why) when no such server is given and it is not required.
    ///
    /// # Panics
    /// When the server is required but not given, or given but cannot be reached.
    pub fn create(kind: ServerKind, label: &str) -> Option<ScratchDatabase> {
        let var = kind.env_var();
        let Some(server) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) else {
            if required() {
                panic!("{label}: {var} is not set, and C10K_E2E_REQUIRED=1; set it, e.g. {var}={}", kind.example_url());
            }
            eprintln!("skipped: {label} needs a database server; set {var}, e.g. {var}={}", kind.example_url());
            return None;
        };
        Some(ScratchDatabase::on(kind, &server, label).unwrap_or_else(|e| panic!("{label}: {e}")))
    }

    /// A fresh database on the `kind` server at `server` (a URL as `--db` takes it), named
    /// after `label`; an unreachable server or a refused `CREATE` is an error that says
    /// which. For callers that must go on without the server (`c10k bench`).
    pub fn on(kind: ServerKind, server: &str, label: &str) -> Result<ScratchDatabase, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let clean: String =
            label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let mut name = format!("c10k_t{}_{}_{clean}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        name.truncate(63); // both servers' longest identifier
        let url = match kind {
            ServerKind::MySql => {
                try_admin_mysql(server, &format!("CREATE DATABASE `{name}`"))?;
                replace_path(server, &name)
            }
            ServerKind::Postgres => {
                try_admin_postgres(server, &format!("CREATE SCHEMA \"{name}\""))?;
                // The application name lets kill_connections find this test's sessions.
                let joiner = if server.contains('?') { '&' } else { '?' };
                format!("{server}{joiner}options=-csearch_path%3D{name}&application_name={name}")
            }
        };
        Ok(ScratchDatabase { kind, server: server.to_string(), name, url })
    }

    /// The database's name (a database on MySQL, a schema on PostgreSQL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's product and version as it reports it: `10.11.19-MariaDB-0+deb12u1`
    /// (`SELECT VERSION()`), `PostgreSQL 15.20 (Debian ...) on x86_64...` (`SELECT version()`).
    pub fn server_version(&self) -> Result<String, String> {
        match self.kind {
            ServerKind::MySql => {
                let mut conn = try_mysql_admin_conn(&self.server)?;
                let v: Option<String> = conn.query_first("SELECT VERSION()").map_err(|e| format!("SELECT VERSION(): {e}"))?;
                v.ok_or_else(|| "SELECT VERSION() returned no row".into())
            }
            ServerKind::Postgres => try_postgres_rows(&self.server, "SELECT version()")?
                .into_iter()
                .next()
                .ok_or_else(|| "SELECT version() returned no row".into()),
        }
    }

    /// The URL to give `--db`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` on the scratch database itself (for tests that damage it on purpose).
    pub fn execute(&self, sql: &str) {
        match self.kind {
            ServerKind::MySql => admin_mysql(&self.url, sql),
            ServerKind::Postgres => admin_postgres(&self.url, sql),
        }
    }

    /// Holds the row lock of `room`'s id counter in a transaction of its own until the
    /// guard is dropped (then rolls back): an append to that room waits in the database,
    /// a gate the test opens. The room must have a message already (its counter row).
    pub fn hold_room(&self, room: &str) -> HeldRoom {
        let (kind, url, room) = (self.kind, self.url.clone(), room.to_string());
        let (held_tx, held_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || match kind {
            ServerKind::MySql => {
                let mut conn = mysql_admin_conn(&url);
                let locked = conn
                    .query_drop("START TRANSACTION")
                    .and_then(|()| conn.exec_drop("SELECT last_id FROM c10k_rooms WHERE room = ? FOR UPDATE", (&room,)));
                let _ = held_tx.send(locked.map_err(|e| e.to_string()));
                let _ = released.recv();
                let _ = conn.query_drop("ROLLBACK");
            }
            ServerKind::Postgres => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                runtime.block_on(async {
                    let config: tokio_postgres::Config = url.parse().expect("the scratch URL");
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("connect");
                    let driver = tokio::spawn(connection);
                    let locked = async {
                        client.batch_execute("BEGIN").await?;
                        client.execute("SELECT last_id FROM c10k_rooms WHERE room = $1 FOR UPDATE", &[&room]).await
                    }
                    .await;
                    let _ = held_tx.send(locked.map(drop).map_err(|e| e.to_string()));
                    // Blocking this thread is fine: it runs nothing else.
                    let _ = released.recv();
                    let _ = client.batch_execute("ROLLBACK").await;
                    drop(client);
                    let _ = driver.await;
                });
            }
        });
        match held_rx.recv() {
            Ok(Ok(())) => HeldRoom { release: Some(release), holder: Some(holder) },
            Ok(Err(e)) => panic!("cannot lock the room's counter: {e}"),
            Err(_) => panic!("the lock holder died before locking"),
        }
    }

    /// Waits (polling, up to `limit`) until a session of this database waits for a row
    /// lock, as an append to a [`ScratchDatabase::hold_room`] room does. False at the limit.
    pub fn someone_waits_for_a_lock(&self, limit: std::time::Duration) -> bool {
        let name = &self.name;
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let waiting = match self.kind {
                ServerKind::MySql => {
                    // MariaDB's INNODB_TRX does not reliably list lock waits; the process
                    // list does show a session inside the counter's bump, which while the
                    // row is held can only be waiting for it.
                    let mut conn = mysql_admin_conn(&self.server);
                    let count: Option<u64> = conn
                        .exec_first(
                            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ? \
                             AND INFO LIKE 'INSERT INTO c10k_rooms%'",
                            (name,),
                        )
                        .unwrap_or_else(|e| panic!("listing {name}'s sessions: {e}"));
                    count.unwrap_or(0) > 0
                }
                ServerKind::Postgres => {
                    let sql = format!(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = '{name}' AND wait_event_type = 'Lock'"
                    );
                    admin_postgres_count(&self.server, &sql) > 0
                }
            };
            if waiting {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10)); // poll the server's view
        }
        false
    }

    /// Ends every session connected to this database from the server's side, as a
    /// database restart or an administrator would, and returns once the server has
    /// closed them all.
    pub fn kill_connections(&self) {
        let name = &self.name;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = match self.kind {
                ServerKind::MySql => {
                    let mut conn = mysql_admin_conn(&self.server);
                    let ids: Vec<u64> = conn
                        .exec(
                            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                            (name,),
                        )
                        .unwrap_or_else(|e| panic!("listing {name}'s sessions: {e}"));
                    for id in &ids {
                        // A session may end by itself meanwhile: that is what was wanted.
                        let _ = conn.query_drop(format!("KILL {id}"));
                    }
                    ids.len()
                }
                ServerKind::Postgres => {
                    let sql = format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = '{name}' AND pid <> pg_backend_pid()"
                    );
                    admin_postgres_count(&self.server, &sql)
                }
            };
            if left == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {left} sessions still there after 10 s of killing");
            std::thread::sleep(std::time::Duration::from_millis(20)); // poll until the server has ended them
        }
    }
}

/// A room's counter row locked by [`ScratchDatabase::hold_room`]; released on drop.
#[derive(Debug)]
pub struct HeldRoom {
    release: Option<std::sync::mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl HeldRoom {
    /// Rolls the holding transaction back: waiting appends go on.
    pub fn release(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        drop(self.release.take());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

impl Drop for HeldRoom {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        let result = std::panic::catch_unwind(|| match self.kind {
            ServerKind::MySql => admin_mysql(&self.server, &format!("DROP DATABASE IF EXISTS `{name}`")),
            ServerKind::Postgres => admin_postgres(&self.server, &format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")),
        });
        if result.is_err() {
            eprintln!("could not drop the scratch database {name}; drop it by hand");
        }
    }
}

/// `mysql://user@host:port/db?x` with `db` replaced by `name`.
fn replace_path(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|at| at + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn mysql_admin_conn(url: &str) -> mysql::Conn {
    try_mysql_admin_conn(url).unwrap_or_else(|e| panic!("{e}"))
}

fn try_mysql_admin_conn(url: &str) -> Result<mysql::Conn, String> {
    let opts = mysql::Opts::from_url(url).map_err(|e| format!("{url}: {e}"))?;
    let opts = mysql::OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .tcp_connect_timeout(Some(std::time::Duration::from_secs(10)));
    mysql::Conn::new(opts).map_err(|e| format!("cannot reach the MySQL server at {url}: {e}"))
}

fn admin_mysql(url: &str, sql: &str) {
    try_admin_mysql(url, sql).unwrap_or_else(|e| panic!("{e}"));
}

fn try_admin_mysql(url: &str, sql: &str) -> Result<(), String> {
    try_mysql_admin_conn(url)?.query_drop(sql).map_err(|e| format!("{sql}: {e}"))
}

fn admin_postgres(url: &str, sql: &str) {
    admin_postgres_count(url, sql);
}

fn try_admin_postgres(url: &str, sql: &str) -> Result<(), String> {
    try_postgres_rows(url, sql).map(drop)
}

fn admin_postgres_count(url: &str, sql: &str) -> usize {
    try_postgres_rows(url, sql).unwrap_or_else(|e| panic!("{e}")).len()
}

/// Runs `sql` and returns the first column of the rows it returned. On a thread of its
/// own, so that a test inside a tokio runtime may call it too.
fn try_postgres_rows(url: &str, sql: &str) -> Result<Vec<String>, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                runtime.block_on(async {
                    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
                    config.connect_timeout(std::time::Duration::from_secs(10));
                    let (client, connection) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| format!("cannot reach the PostgreSQL server at {url}: {e}"))?;
                    let driver = tokio::spawn(connection);
                    let rows = client.simple_query(sql).await.map_err(|e| format!("{sql}: {e}"));
                    drop(client);
                    let _ = driver.await;
                    Ok(rows?
                        .iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_string()),
                            _ => None,
                        })
                        .collect())
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::replace_path;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_query_kept() {
        assert_eq!(replace_path("mysql://root@h:3306/test", "x"), "mysql://root@h:3306/x");
        assert_eq!(replace_path("mysql://root@h:3306", "x"), "mysql://root@h:3306/x");
        assert_eq!(replace_path("mysql://root@h:3306/test?a=1", "x"), "mysql://root@h:3306/x?a=1");
    }
}
