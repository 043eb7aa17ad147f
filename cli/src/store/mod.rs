//! The people graph's storage, behind a small trait: the embedded SQLite
//! file ([`SqliteStore`], the default) or a shared PostgreSQL database
//! ([`PostgresStore`], for several instances of one service), chosen by
//! [`open`]. Calls are blocking; the service runs them off the reactor
//! threads.

mod postgres;
mod sqlite;

pub use self::postgres::{LISTENER_NAME, PEOPLE_CHANNEL, PostgresStore};
pub use self::sqlite::SqliteStore;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::proto::people::{EdgeKind, Person};

/// The vertex labels of the graph.
pub const PERSON: &str = "person";
/// Organization vertices.
pub const ORGANIZATION: &str = "organization";
/// Department vertices.
pub const DEPARTMENT: &str = "department";

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A referenced vertex does not exist (the message names the field).
    NotFound(String),
    /// The operation does not fit the graph (e.g. an edge between the wrong kinds).
    Invalid(String),
    /// The database is out of reach for now (no pooled connection within
    /// its wait, the server restarting, the connection lost before a write
    /// was committed): nothing was written, worth another try.
    Unavailable(String),
    /// The connection was lost while a write was being committed: it may
    /// or may not have happened (retrying may write it twice).
    OutcomeUnknown(String),
    /// The database failed.
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(m) | StoreError::Invalid(m) => f.write_str(m),
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::OutcomeUnknown(m) => write!(f, "outcome unknown: {m}"),
            StoreError::Backend(m) => write!(f, "store failure: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What the people service needs from a graph store.
pub trait Store: Send + Sync + 'static {
    /// Stores people in one transaction; returns them with ids and labels.
    fn create_people(&self, people: &[Person]) -> Result<Vec<Person>, StoreError>;
    /// Stores a vertex with `label` (`organization`, `department`); returns its id.
    fn create_vertex(&self, label: &str, name: &str) -> Result<i32, StoreError>;
    /// The label of vertex `id`, if it exists.
    fn label_of(&self, id: i32) -> Result<Option<String>, StoreError>;
    /// Adds an edge (the caller checked the vertex kinds); returns its id.
    fn link(&self, kind: EdgeKind, from: i32, to: i32) -> Result<i32, StoreError>;
    /// One page of the people whose name contains `name_contains`: ids
    /// above `after_id`, in id order, at most `limit` (keyset paging: a
    /// streaming reader holds one page, never the whole result).
    fn list_people(
        &self,
        name_contains: &str,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError>;
    /// One page of the people with an edge of `kind` to vertex `to`: ids
    /// above `after_id`, in id order, at most `limit`.
    fn people_linked_to(
        &self,
        kind: EdgeKind,
        to: i32,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError>;
    /// For a store several instances share: hands `deliver` every person
    /// stored from now on through *any* instance, once each, in id order,
    /// from a thread of the store's own, at a cost of O(1) store queries
    /// per creation whatever the number of watchers. `false` when the store
    /// cannot see other instances' writes (SQLite: one instance per file);
    /// the service then feeds its watchers with its own creations.
    fn watch_created(&self, deliver: Deliver) -> bool {
        let _ = deliver;
        false
    }
}

/// What [`Store::watch_created`] hands new people to.
pub type Deliver = Box<dyn Fn(Vec<Person>) + Send + Sync>;

/// The edge label stored for each kind.
pub fn edge_label(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::WorksFor => "works_for",
        EdgeKind::MemberOf => "member_of",
        EdgeKind::BelongsTo => "belongs_to",
    }
}

/// Where the people live: a `postgres://` (or `postgresql://`) URL is a
/// shared PostgreSQL database, reached through a pool of `pool_size`
/// connections; anything else is the path of a SQLite file; `None` is a
/// fresh in-memory SQLite database. The schema is created or brought up to
/// date before this returns.
pub fn open(db: Option<&str>, pool_size: u32) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match db {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Arc::new(PostgresStore::connect(url, pool_size)?)
        }
        Some(path) => Arc::new(SqliteStore::open(Path::new(path))?),
        None => Arc::new(SqliteStore::in_memory()?),
    })
}
