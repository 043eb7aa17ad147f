//! The embedded SQLite store: one file, one connection behind a mutex.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{PERSON, Store, StoreError, edge_label};
use crate::proto::people::{EdgeKind, Person};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The embedded SQLite store: a `vertices` and an `edges` table; ids are
/// assigned by the database.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A fresh in-memory database (for tests and demos).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS vertices (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 label TEXT NOT NULL,
                 name TEXT NOT NULL,
                 email TEXT NOT NULL DEFAULT '',
                 url TEXT NOT NULL DEFAULT ''
             );
             CREATE TABLE IF NOT EXISTS edges (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 label TEXT NOT NULL,
                 from_id INTEGER NOT NULL REFERENCES vertices(id),
                 to_id INTEGER NOT NULL REFERENCES vertices(id),
                 UNIQUE (label, from_id, to_id)
             );
             CREATE INDEX IF NOT EXISTS edges_to ON edges (to_id, label);",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn person_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Person> {
    Ok(Person {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        url: row.get(3)?,
        label: PERSON.into(),
    })
}

impl Store for SqliteStore {
    fn create_people(&self, people: &[Person]) -> Result<Vec<Person>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(people.len());
        {
            let mut insert = tx.prepare(
                "INSERT INTO vertices (label, name, email, url) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for p in people {
                insert.execute(params![PERSON, p.name, p.email, p.url])?;
                let id = i32::try_from(tx.last_insert_rowid())
                    .map_err(|_| StoreError::Backend("vertex ids exhausted".into()))?;
                out.push(Person {
                    id,
                    label: PERSON.into(),
                    ..p.clone()
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn create_vertex(&self, label: &str, name: &str) -> Result<i32, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO vertices (label, name) VALUES (?1, ?2)",
            params![label, name],
        )?;
        i32::try_from(conn.last_insert_rowid())
            .map_err(|_| StoreError::Backend("vertex ids exhausted".into()))
    }

    fn label_of(&self, id: i32) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT label FROM vertices WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn link(&self, kind: EdgeKind, from: i32, to: i32) -> Result<i32, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO edges (label, from_id, to_id) VALUES (?1, ?2, ?3)",
            params![edge_label(kind), from, to],
        )?;
        let id: i64 = conn.query_row(
            "SELECT id FROM edges WHERE label = ?1 AND from_id = ?2 AND to_id = ?3",
            params![edge_label(kind), from, to],
            |r| r.get(0),
        )?;
        i32::try_from(id).map_err(|_| StoreError::Backend("edge ids exhausted".into()))
    }

    fn list_people(
        &self,
        name_contains: &str,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT id, name, email, url FROM vertices
             WHERE label = 'person' AND instr(name, ?1) > 0 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = q.query_map(params![name_contains, after_id, limit], person_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn people_linked_to(
        &self,
        kind: EdgeKind,
        to: i32,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT v.id, v.name, v.email, v.url FROM edges e JOIN vertices v ON v.id = e.from_id
             WHERE e.to_id = ?1 AND e.label = ?2 AND v.label = 'person' AND v.id > ?3
             ORDER BY v.id LIMIT ?4",
        )?;
        let rows = q.query_map(params![to, edge_label(kind), after_id, limit], person_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
