//! The shared PostgreSQL store: the same two tables as SQLite, reached
//! through a bounded pool of connections, so that several instances of the
//! people service can serve one graph.
//!
//! Every instance sees every creation: a person is stored under an advisory
//! lock (so ids are drawn and committed in one order) with a `NOTIFY` on
//! [`PEOPLE_CHANNEL`]; each store keeps one more connection that `LISTEN`s
//! and, per notification, reads the people after the last one it has seen
//! (one query per creation burst, whatever the number of watchers), which
//! it hands to the service's feed ([`Store::watch_created`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use postgres::NoTls;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::r2d2::{Pool, PooledConnection};

use super::{Deliver, PERSON, Store, StoreError, edge_label};
use crate::proto::people::{EdgeKind, Person};

type Manager = PostgresConnectionManager<NoTls>;

/// How long a store call waits for a pooled connection before it fails
/// with [`StoreError::Unavailable`].
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// The schema, one migration per version; a database records the versions
/// it has run in `zrpc_schema`.
const MIGRATIONS: &[&str] = &["CREATE TABLE vertices (
         id SERIAL PRIMARY KEY,
         label TEXT NOT NULL,
         name TEXT NOT NULL,
         email TEXT NOT NULL DEFAULT '',
         url TEXT NOT NULL DEFAULT ''
     );
     CREATE TABLE edges (
         id SERIAL PRIMARY KEY,
         label TEXT NOT NULL,
         from_id INTEGER NOT NULL REFERENCES vertices(id),
         to_id INTEGER NOT NULL REFERENCES vertices(id),
         UNIQUE (label, from_id, to_id)
     );
     CREATE INDEX edges_to ON edges (to_id, label);
     CREATE INDEX vertices_label ON vertices (label, id);"];

/// A key for the advisory lock that serialises migrations when several
/// instances start at once.
const MIGRATION_LOCK: i64 = 0x7a72_7063; // "zrpc"

/// The channel person creations are announced on.
pub const PEOPLE_CHANNEL: &str = "zrpc_people";

/// A key for the advisory lock person creations take, so ids are drawn and
/// committed in one order: a reader that has seen id N will never see a
/// person below N appear later.
const PEOPLE_LOCK: i64 = 0x7a72_7070; // "zrpp"

/// How long the listener waits for a notification before it looks at its
/// stop flag (a store dropped lets its listener go within this). Nothing
/// else needs the wait to end: a notification, a lost connection and a new
/// feed (whose first catch-up rides on the next notification: before it,
/// there is nothing new to hand on) all come as events. An idle listener
/// wakes once per LISTEN_IDLE.
const LISTEN_IDLE: Duration = Duration::from_secs(5);

/// The first wait before the listener reconnects; it doubles up to
/// [`LISTEN_BACKOFF`].
const LISTEN_RETRY: Duration = Duration::from_millis(250);

/// The `application_name` of the listening connection (what
/// `pg_stat_activity` shows for it).
pub const LISTENER_NAME: &str = "zrpc-people-listener";

/// How long the listening connection may stay silent to TCP (no keepalive
/// answered, data unacknowledged) before it counts as lost.
const LISTEN_DEAD: Duration = Duration::from_secs(25);

/// The longest wait between the listener's attempts to reconnect.
const LISTEN_BACKOFF: Duration = Duration::from_secs(5);

/// People the listener reads per query when it catches up.
const CATCH_UP_PAGE: u32 = 1000;

/// People in PostgreSQL (`zrpc serve --db postgres://...`).
pub struct PostgresStore {
    /// `None` only while dropping.
    pool: Option<Pool<Manager>>,
    /// Hands the listener its feed (taken by the first `watch_created`).
    feed: std::sync::Mutex<Option<Sender<Deliver>>>,
    /// Tells the listener to stop.
    stop: Arc<AtomicBool>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The synchronous client closes its connections by blocking on a
        // runtime of its own, which tokio forbids on its worker threads
        // (where the last handle of a server often goes): close them on a
        // thread of their own.
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("zrpc-pg-close".into())
                .spawn(move || drop(pool));
        }
    }
}

/// Whether `e` means the connection to the database was lost (closed, an
/// I/O error, the server shutting down): not a bug, worth another try on
/// another connection.
fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| {
            c == &SqlState::ADMIN_SHUTDOWN
                || c == &SqlState::CANNOT_CONNECT_NOW
                || c == &SqlState::TOO_MANY_CONNECTIONS
                || c == &SqlState::CRASH_SHUTDOWN
        })
}

impl From<postgres::Error> for StoreError {
    /// An error before a write was committed: a lost connection means the
    /// write surely did not happen (its transaction is rolled back).
    fn from(e: postgres::Error) -> Self {
        if connection_lost(&e) {
            return StoreError::Unavailable(e.to_string());
        }
        match e.as_db_error() {
            Some(db) => StoreError::Backend(db.message().to_owned()),
            None => StoreError::Backend(e.to_string()),
        }
    }
}

/// An error while committing a write (COMMIT, or a statement that commits
/// by itself): with the connection lost, the write may or may not have
/// happened.
fn committing(e: postgres::Error) -> StoreError {
    if connection_lost(&e) {
        StoreError::OutcomeUnknown(e.to_string())
    } else {
        e.into()
    }
}

impl PostgresStore {
    /// Connects a pool of `pool_size` connections (at least 1) to `url`
    /// and brings the schema up to date. Fails when the database cannot be
    /// reached within 5 s (`POOL_WAIT`).
    pub fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("database URL: {e}")))?;
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            // Connections open as they are needed, not all at start.
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            .build(PostgresConnectionManager::new(config.clone(), NoTls))
            .map_err(|e| StoreError::Unavailable(format!("database {}: {e}", redact(url))))?;
        let (feed, rx) = mpsc::channel();
        let store = Self {
            pool: Some(pool),
            feed: std::sync::Mutex::new(Some(feed)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        store.migrate()?;
        // The listener starts from the newest person now: whoever watches
        // reads older people from the store first.
        let last: i32 = store
            .conn()?
            .query_one(
                "SELECT COALESCE(MAX(id), 0) FROM vertices WHERE label = 'person'",
                &[],
            )?
            .get(0);
        let mut config = config;
        // A listener that hears nothing cannot tell a quiet database from
        // a dead connection: TCP keepalives find a silent one within
        // LISTEN_DEAD, and a connect is bounded like the pool's.
        config
            .application_name(LISTENER_NAME)
            .connect_timeout(POOL_WAIT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(LISTEN_DEAD);
        let listener = Listener {
            config,
            client: None,
            last,
            feed: rx,
            deliver: None,
            stop: store.stop.clone(),
        };
        std::thread::Builder::new()
            .name("zrpc-pg-listen".into())
            .spawn(move || listener.run())
            .map_err(|e| StoreError::Backend(format!("listener thread: {e}")))?;
        Ok(store)
    }

    fn conn(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool
            .as_ref()
            .expect("the pool lives until drop")
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }

    /// Runs the migrations this database has not run yet, in one
    /// transaction under an advisory lock (instances starting together
    /// take turns; the second finds the work done).
    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS zrpc_schema (version INTEGER PRIMARY KEY)")?;
        let done: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM zrpc_schema", &[])?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            if version > done {
                tx.batch_execute(sql)?;
                tx.execute("INSERT INTO zrpc_schema (version) VALUES ($1)", &[&version])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn person_row(row: &postgres::Row) -> Person {
    Person {
        id: row.get(0),
        name: row.get(1),
        email: row.get(2),
        url: row.get(3),
        label: PERSON.into(),
    }
}

impl Store for PostgresStore {
    fn create_people(&self, people: &[Person]) -> Result<Vec<Person>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Ids in commit order, and every listener told at COMMIT.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1), pg_notify($2, '')",
            &[&PEOPLE_LOCK, &PEOPLE_CHANNEL],
        )?;
        let insert = tx.prepare(
            "INSERT INTO vertices (label, name, email, url) VALUES ($1, $2, $3, $4) RETURNING id",
        )?;
        let mut out = Vec::with_capacity(people.len());
        for p in people {
            let id: i32 = tx
                .query_one(&insert, &[&PERSON, &p.name, &p.email, &p.url])?
                .get(0);
            out.push(Person {
                id,
                label: PERSON.into(),
                ..p.clone()
            });
        }
        tx.commit().map_err(committing)?;
        Ok(out)
    }

    fn create_vertex(&self, label: &str, name: &str) -> Result<i32, StoreError> {
        Ok(self
            .conn()?
            .query_one(
                "INSERT INTO vertices (label, name) VALUES ($1, $2) RETURNING id",
                &[&label, &name],
            )
            .map_err(committing)?
            .get(0))
    }

    fn label_of(&self, id: i32) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()?
            .query_opt("SELECT label FROM vertices WHERE id = $1", &[&id])?
            .map(|r| r.get(0)))
    }

    fn link(&self, kind: EdgeKind, from: i32, to: i32) -> Result<i32, StoreError> {
        let mut conn = self.conn()?;
        let label = edge_label(kind);
        conn.execute(
            "INSERT INTO edges (label, from_id, to_id) VALUES ($1, $2, $3)
             ON CONFLICT (label, from_id, to_id) DO NOTHING",
            &[&label, &from, &to],
        )?;
        Ok(conn
            .query_one(
                "SELECT id FROM edges WHERE label = $1 AND from_id = $2 AND to_id = $3",
                &[&label, &from, &to],
            )?
            .get(0))
    }

    fn list_people(
        &self,
        name_contains: &str,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError> {
        let mut conn = self.conn()?;
        Ok(people_page(&mut conn, name_contains, after_id, limit)?)
    }

    fn people_linked_to(
        &self,
        kind: EdgeKind,
        to: i32,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT v.id, v.name, v.email, v.url FROM edges e JOIN vertices v ON v.id = e.from_id
             WHERE e.to_id = $1 AND e.label = $2 AND v.label = 'person' AND v.id > $3
             ORDER BY v.id LIMIT $4",
            &[&to, &edge_label(kind), &after_id, &i64::from(limit)],
        )?;
        Ok(rows.iter().map(person_row).collect())
    }

    fn watch_created(&self, deliver: Deliver) -> bool {
        let feed = self.feed.lock().expect("feed lock").take();
        feed.is_some_and(|f| f.send(deliver).is_ok())
    }
}

/// One page of people whose name contains `name_contains`, ids above
/// `after_id`, in id order.
fn people_page(
    c: &mut postgres::Client,
    name_contains: &str,
    after_id: i32,
    limit: u32,
) -> Result<Vec<Person>, postgres::Error> {
    let rows = c.query(
        "SELECT id, name, email, url FROM vertices
         WHERE label = 'person' AND strpos(name, $1) > 0 AND id > $2 ORDER BY id LIMIT $3",
        &[&name_contains, &after_id, &i64::from(limit)],
    )?;
    Ok(rows.iter().map(person_row).collect())
}

/// The connection that `LISTEN`s for creations, on a thread of its own
/// (the synchronous client blocks).
struct Listener {
    config: postgres::Config,
    /// `None` while (re)connecting.
    client: Option<postgres::Client>,
    /// The newest person handed on (or, before a feed is given, seen).
    last: i32,
    feed: Receiver<Deliver>,
    deliver: Option<Deliver>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn run(mut self) {
        let mut backoff = LISTEN_RETRY;
        // A catch-up is due: after a notification, a (re)connect, a feed given.
        let mut due = true;
        while !self.stop.load(Ordering::Relaxed) {
            if self.deliver.is_none()
                && let Ok(d) = self.feed.try_recv()
            {
                self.deliver = Some(d);
                due = true;
            }
            let Some(client) = self.client.as_mut() else {
                match self.config.connect(NoTls).and_then(|mut c| {
                    c.batch_execute(&format!("LISTEN {PEOPLE_CHANNEL}"))?;
                    Ok(c)
                }) {
                    Ok(c) => {
                        self.client = Some(c);
                        backoff = LISTEN_RETRY;
                        due = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "people listener: cannot reach the database; retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(LISTEN_BACKOFF);
                    }
                }
                continue;
            };
            if due && let Some(deliver) = &self.deliver {
                match catch_up(client, &mut self.last, deliver) {
                    Ok(()) => due = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "people listener: connection lost; reconnecting");
                        self.client = None;
                        continue;
                    }
                }
            }
            let heard = client.notifications().timeout_iter(LISTEN_IDLE).next();
            match heard {
                Ok(Some(_)) => {
                    // Notifications already here are one catch-up.
                    while let Ok(Some(_)) = client.notifications().iter().next() {}
                    due = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "people listener: connection lost; reconnecting");
                    self.client = None;
                }
                Ok(None) => {}
            }
        }
    }
}

/// The newest id the vertices' sequence has drawn (0 before the first).
fn last_id_drawn(c: &mut postgres::Client) -> Result<i64, postgres::Error> {
    let row = c.query_one(
        "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM vertices_id_seq",
        &[],
    )?;
    Ok(row.get(0))
}

/// Hands on every person stored after `*last`, a page at a time.
///
/// When nothing is newer, the ids may have been restarted under the
/// listener (`TRUNCATE ... RESTART IDENTITY` or `setval`, as an operator
/// empties a database): the id sequence then stands below `*last`, and
/// without a look at it every person until the ids passed `*last` again
/// would be lost to the watchers. The people from the start are handed on
/// then (the watchers skip what they sent already). One query on the
/// sequence, only when a catch-up found nothing.
fn catch_up(
    c: &mut postgres::Client,
    last: &mut i32,
    deliver: &Deliver,
) -> Result<(), postgres::Error> {
    loop {
        let page = people_page(c, "", *last, CATCH_UP_PAGE)?;
        let Some(newest) = page.last() else {
            if *last > 0 && last_id_drawn(c)? < i64::from(*last) {
                tracing::info!(
                    last = *last,
                    "people listener: the ids were restarted; handing on the people from the start"
                );
                *last = 0;
                continue;
            }
            return Ok(());
        };
        *last = newest.id;
        let full = page.len() == CATCH_UP_PAGE as usize;
        deliver(page);
        if !full {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://app:secret@127.0.0.1:5432/people"),
            "postgres://app:***@127.0.0.1:5432/people"
        );
        assert_eq!(
            redact("postgres://127.0.0.1/people"),
            "postgres://127.0.0.1/people"
        );
    }
}
