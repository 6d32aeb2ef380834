//! The resource manager's database: nodes, leases with their life cycle and billing records in
//! SQLite (WAL, `synchronous=FULL`), each change committed before the registry acknowledges it.
//! A grant alone is committed without a sync ([`Store::insert_grant`]): the sync of an idle
//! disk took most of a cold lease, and the registry recovers a grant the disk lost.
//!
//! The schema is versioned with `PRAGMA user_version` ([`SCHEMA_VERSION`]); opening runs the
//! migrations a database lacks, each in its own transaction, and refuses a database written by
//! a newer resource manager or a file that is not one of ours.
//!
//! | table | rows |
//! |---|---|
//! | `meta` | `key`, `value`: facts about the database (`created_at_ms`, `created_by`) and the last reserved lease id (`lease_ids_reserved_to`) |
//! | `nodes` | `name`, `ip_address`, `port`, `cores`, `memory` (MiB), `added_at_ms` |
//! | `leases` | `id`, `node`, `cores`, `memory`, `state` (`active`, `in_doubt`, `closed`, `released`), `granted_at_ms`, `ended_at_ms` |
//! | `bills` | `lease_id` (one bill per lease), `node`, `recorded_at_ms`, `allocation_ns`, `hot_polling_ns`, `execution_ns`, `invocations` |
//!
//! Counters are SQLite integers (signed 64 bits); a `u64` is stored as its two's-complement
//! `i64`, so values of 2^63 and more read back exactly but look negative in `sqlite3`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::registry::{Billing, LeaseState, NodeSpec};

/// The schema this build writes. A database with a higher `user_version` is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// Each migration takes the schema from its index to its index + 1.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE nodes (
         name TEXT PRIMARY KEY,
         ip_address TEXT NOT NULL,
         port INTEGER NOT NULL,
         cores INTEGER NOT NULL,
         memory INTEGER NOT NULL,
         added_at_ms INTEGER NOT NULL
     );
     CREATE TABLE leases (
         id INTEGER PRIMARY KEY,
         node TEXT NOT NULL,
         cores INTEGER NOT NULL,
         memory INTEGER NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('active', 'in_doubt', 'closed', 'released')),
         granted_at_ms INTEGER NOT NULL,
         ended_at_ms INTEGER
     );
     CREATE INDEX leases_open ON leases (node) WHERE state IN ('active', 'in_doubt');
     CREATE TABLE bills (
         lease_id INTEGER PRIMARY KEY REFERENCES leases (id),
         node TEXT NOT NULL,
         recorded_at_ms INTEGER NOT NULL,
         allocation_ns INTEGER NOT NULL,
         hot_polling_ns INTEGER NOT NULL,
         execution_ns INTEGER NOT NULL,
         invocations INTEGER NOT NULL
     );
     CREATE INDEX bills_by_time ON bills (recorded_at_ms);",
];

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Written by a newer resource manager.
    #[error(
        "the database {} has schema version {found}, newer than this resource manager's \
         {SCHEMA_VERSION}: run the newer resource manager, or give another --database",
        path.display()
    )]
    Newer {
        /// The database.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
    },
    /// A SQLite file with tables of its own and no schema version.
    #[error(
        "{} is a SQLite database but not a resource manager's (it has tables and no schema version); give another --database",
        path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Another process (a second resource manager) has the database open.
    #[error(
        "the database {} is in use by another process (another resource manager?); give each its own --database",
        path.display()
    )]
    InUse {
        /// The database.
        path: PathBuf,
    },
    /// The file could not be opened or locked.
    #[error("database {}: {source}", path.display())]
    Io {
        /// The database.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("database {}: {source}", path.display())]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLease {
    /// Lease id.
    pub id: u32,
    /// Node it was granted on.
    pub node: String,
    /// Cores.
    pub cores: u32,
    /// Memory, MiB.
    pub memory: u64,
    /// Where it is in its life.
    pub state: LeaseState,
    /// Granted, ms since the epoch.
    pub granted_at_ms: u64,
    /// Closed or released, ms since the epoch.
    pub ended_at_ms: Option<u64>,
    /// Its bill, when closed.
    pub billing: Option<Billing>,
}

/// Everything the registry starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The nodes, by name.
    pub nodes: Vec<(String, NodeSpec)>,
    /// Every lease, by id.
    pub leases: Vec<StoredLease>,
    /// The last lease id reserved ([`Store::reserve_lease_ids`]), if any was.
    pub lease_ids_reserved_to: Option<u32>,
}

/// The `meta` key of the last reserved lease id.
const LEASE_IDS_RESERVED_TO: &str = "lease_ids_reserved_to";

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// An exclusive `flock` on the database file while it is open, so two resource managers
    /// never share one (SQLite's own locks are POSIX locks, independent of it; readers such as
    /// `sqlite3` take none).
    _lock: std::fs::File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn state_name(state: LeaseState) -> &'static str {
    match state {
        LeaseState::Active => "active",
        LeaseState::InDoubt => "in_doubt",
        LeaseState::Closed => "closed",
        LeaseState::Released => "released",
    }
}

fn parse_state(name: &str) -> rusqlite::Result<LeaseState> {
    Ok(match name {
        "active" => LeaseState::Active,
        "in_doubt" => LeaseState::InDoubt,
        "closed" => LeaseState::Closed,
        "released" => LeaseState::Released,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("unknown lease state {other:?}").into(),
            ));
        }
    })
}

/// A `u64` as SQLite stores it (two's complement).
fn int(v: u64) -> i64 {
    v as i64
}

/// What [`int`] stored.
fn uint(v: i64) -> u64 {
    v as u64
}

impl Store {
    /// Opens (creating if needed) the database at `path`, brings its schema up to
    /// [`SCHEMA_VERSION`], and refuses one from a newer resource manager.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        // SQLite creates the file on first use; make it exist before locking it.
        conn.query_row("PRAGMA schema_version", [], |_| Ok(()))
            .map_err(sqlite)?;
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        // A newer database is refused before anything (the journal mode) is changed in it.
        let found: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: path.to_owned(),
                found,
            });
        }
        // WAL: a commit is one append to the log, and readers (sqlite3) do not block us.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                "database {}: journal mode {mode}, not WAL (a file system without shared memory?)",
                path.display()
            );
        }
        // FULL: a commit is on disk (the log synced) before it returns, so before we answer.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(sqlite)?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            _lock: lock,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one transaction (of `behavior`) and commits it; nothing of it stays if `f`
    /// or the commit fails.
    fn in_transaction(
        &mut self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let done = self
            .conn
            .transaction_with_behavior(behavior)
            .and_then(|tx| f(&tx).and_then(|()| tx.commit()));
        done.map_err(|e| self.err(e))
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found,
            });
        }
        if found == 0 {
            let tables: u32 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if tables > 0 {
                return Err(StoreError::Foreign {
                    path: self.path.clone(),
                });
            }
        }
        for version in found..SCHEMA_VERSION {
            self.in_transaction(TransactionBehavior::Exclusive, |tx| {
                tx.execute_batch(MIGRATIONS[version as usize])?;
                if version == 0 {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('created_at_ms', ?1), ('created_by', ?2)",
                        params![
                            crate::registry::now_ms().to_string(),
                            concat!("resource_manager ", env!("CARGO_PKG_VERSION"))
                        ],
                    )?;
                }
                tx.pragma_update(None, "user_version", version + 1)
            })?;
            tracing::info!(
                "database {}: schema version {} -> {}",
                self.path.display(),
                version,
                version + 1
            );
        }
        Ok(())
    }

    /// Everything in the database, after marking the leases that were active as in doubt
    /// (their managers have to say whether they still hold them).
    pub fn load_after_restart(&mut self) -> Result<Loaded, StoreError> {
        self.conn
            .execute(
                "UPDATE leases SET state = 'in_doubt' WHERE state = 'active'",
                [],
            )
            .map_err(|e| self.err(e))?;
        self.load()
    }

    /// Everything in the database.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let e = |source| self.err(source);
        let mut nodes_stmt = self
            .conn
            .prepare("SELECT name, ip_address, port, cores, memory FROM nodes ORDER BY name")
            .map_err(e)?;
        let nodes = nodes_stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    NodeSpec {
                        ip_address: r.get(1)?,
                        port: r.get(2)?,
                        cores: r.get(3)?,
                        memory: uint(r.get(4)?),
                    },
                ))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        let mut leases_stmt = self
            .conn
            .prepare(
                "SELECT l.id, l.node, l.cores, l.memory, l.state, l.granted_at_ms, l.ended_at_ms,
                        b.allocation_ns, b.hot_polling_ns, b.execution_ns, b.invocations
                 FROM leases l LEFT JOIN bills b ON b.lease_id = l.id ORDER BY l.id",
            )
            .map_err(e)?;
        let leases = leases_stmt
            .query_map([], |r| {
                let billing = match r.get::<_, Option<i64>>(7)? {
                    None => None,
                    Some(allocation_ns) => Some(Billing {
                        allocation_ns: uint(allocation_ns),
                        hot_polling_ns: uint(r.get(8)?),
                        execution_ns: uint(r.get(9)?),
                        invocations: uint(r.get(10)?),
                    }),
                };
                Ok(StoredLease {
                    id: r.get(0)?,
                    node: r.get(1)?,
                    cores: r.get(2)?,
                    memory: uint(r.get(3)?),
                    state: parse_state(&r.get::<_, String>(4)?)?,
                    granted_at_ms: uint(r.get(5)?),
                    ended_at_ms: r.get::<_, Option<i64>>(6)?.map(uint),
                    billing,
                })
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        let lease_ids_reserved_to = match self.meta(LEASE_IDS_RESERVED_TO)? {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                e(rusqlite::Error::InvalidColumnType(
                    0,
                    format!("meta {LEASE_IDS_RESERVED_TO} = {v:?}"),
                    rusqlite::types::Type::Text,
                ))
            })?),
        };
        Ok(Loaded {
            nodes,
            leases,
            lease_ids_reserved_to,
        })
    }

    /// Stores a new node.
    pub fn insert_node(&self, name: &str, spec: &NodeSpec, at_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO nodes (name, ip_address, port, cores, memory, added_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    name,
                    spec.ip_address,
                    spec.port,
                    spec.cores,
                    int(spec.memory),
                    int(at_ms)
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Removes a node and releases `released` (its open leases), in one transaction.
    pub fn remove_node(
        &mut self,
        name: &str,
        released: &[u32],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.in_transaction(TransactionBehavior::Deferred, |tx| {
            set_states(tx, released, LeaseState::Released, Some(at_ms))?;
            tx.execute("DELETE FROM nodes WHERE name = ?1", params![name])
                .map(drop)
        })
    }

    /// Stores a granted lease (state active), committed without waiting for the disk
    /// (`synchronous=NORMAL` for this one commit): it survives the resource manager's crash,
    /// but its host's crash may lose it. The registry makes up for that (see its module docs):
    /// lease ids are reserved durably ([`Store::reserve_lease_ids`]) and a lost lease comes
    /// back from its manager.
    pub fn insert_grant(
        &self,
        id: u32,
        node: &str,
        cores: u32,
        memory: u64,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.err(e))?;
        let inserted = insert_lease(&self.conn, id, node, cores, memory, at_ms);
        // Back to FULL before anything else commits, whatever the insert did.
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        inserted.map_err(|e| self.err(e))
    }

    /// Stores leases on `node` that its manager holds and the database had lost (state
    /// active, granted `at_ms`), in one durable transaction.
    pub fn insert_held_leases(
        &mut self,
        node: &str,
        leases: &[(u32, u32, u64)],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.in_transaction(TransactionBehavior::Deferred, |tx| {
            leases.iter().try_for_each(|&(id, cores, memory)| {
                insert_lease(tx, id, node, cores, memory, at_ms)
            })
        })
    }

    /// Records, durably, that lease ids up to `last` may have been handed out: after a
    /// restart ids go on after it.
    pub fn reserve_lease_ids(&self, last: u32) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![LEASE_IDS_RESERVED_TO, last.to_string()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Moves leases to `state` (ended at `ended_at_ms` when they end), in one transaction.
    pub fn set_lease_states(
        &mut self,
        ids: &[u32],
        state: LeaseState,
        ended_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.in_transaction(TransactionBehavior::Deferred, |tx| {
            set_states(tx, ids, state, ended_at_ms)
        })
    }

    /// Closes a lease with its bill, in one transaction.
    pub fn close_lease(
        &mut self,
        id: u32,
        node: &str,
        billing: &Billing,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.in_transaction(TransactionBehavior::Deferred, |tx| {
            set_states(tx, &[id], LeaseState::Closed, Some(at_ms))?;
            tx.prepare_cached(
                "INSERT INTO bills (lease_id, node, recorded_at_ms, allocation_ns, hot_polling_ns,
                                    execution_ns, invocations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                id,
                node,
                int(at_ms),
                int(billing.allocation_ns),
                int(billing.hot_polling_ns),
                int(billing.execution_ns),
                int(billing.invocations)
            ])
            .map(drop)
        })
    }

    /// The value of a `meta` key.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }
}

/// Inserts an active lease.
fn insert_lease(
    conn: &Connection,
    id: u32,
    node: &str,
    cores: u32,
    memory: u64,
    at_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO leases (id, node, cores, memory, state, granted_at_ms)
         VALUES (?1, ?2, ?3, ?4, 'active', ?5)",
    )?
    .execute(params![id, node, cores, int(memory), int(at_ms)])
    .map(drop)
}

fn set_states(
    conn: &Connection,
    ids: &[u32],
    state: LeaseState,
    ended_at_ms: Option<u64>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE leases SET state = ?2, ended_at_ms = coalesce(?3, ended_at_ms) WHERE id = ?1",
    )?;
    for id in ids {
        stmt.execute(params![id, state_name(state), ended_at_ms.map(int)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rfaas-store-{tag}-{}-{}",
            std::process::id(),
            crate::registry::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("resource_manager.db")
    }

    fn spec() -> NodeSpec {
        NodeSpec {
            ip_address: "10.0.0.1".into(),
            port: 10005,
            cores: 8,
            memory: 4096,
        }
    }

    #[test]
    fn a_new_database_gets_the_schema_and_keeps_what_is_stored() {
        let path = scratch("new");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(
            store
                .meta("created_by")
                .unwrap()
                .unwrap()
                .contains("resource_manager")
        );
        store.insert_node("a", &spec(), 1).unwrap();
        store.insert_grant(1, "a", 2, 100, 10).unwrap();
        store.insert_grant(2, "a", 1, 0, 11).unwrap();
        store.insert_grant(3, "a", 1, 0, 12).unwrap();
        let bill = Billing {
            allocation_ns: u64::MAX,
            hot_polling_ns: 2,
            execution_ns: 3,
            invocations: 4,
        };
        store.close_lease(1, "a", &bill, 20).unwrap();
        store
            .set_lease_states(&[2], LeaseState::Released, Some(21))
            .unwrap();
        // A second bill for the same lease is refused by the schema.
        assert!(store.close_lease(1, "a", &bill, 22).is_err());
        drop(store);

        let mut again = Store::open(&path).unwrap();
        let loaded = again.load_after_restart().unwrap();
        assert_eq!(loaded.nodes, [("a".to_string(), spec())]);
        let states: Vec<_> = loaded.leases.iter().map(|l| (l.id, l.state)).collect();
        assert_eq!(
            states,
            [
                (1, LeaseState::Closed),
                (2, LeaseState::Released),
                (3, LeaseState::InDoubt)
            ]
        );
        assert_eq!(loaded.leases[0].billing, Some(bill));
        assert_eq!(loaded.leases[0].ended_at_ms, Some(20));
        assert_eq!(loaded.leases[2].ended_at_ms, None);
        again.remove_node("a", &[3], 30).unwrap();
        let loaded = again.load().unwrap();
        assert!(loaded.nodes.is_empty());
        assert_eq!(loaded.leases[2].state, LeaseState::Released);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn one_database_serves_one_resource_manager() {
        let path = scratch("in-use");
        let first = Store::open(&path).unwrap();
        let msg = Store::open(&path).unwrap_err().to_string();
        assert!(msg.contains("in use by another process"), "{msg}");
        drop(first);
        Store::open(&path).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn newer_and_foreign_databases_are_refused() {
        let path = scratch("newer");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::Newer { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("newer than this resource manager's"), "{msg}");

        let foreign = path.with_file_name("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let msg = Store::open(&foreign).unwrap_err().to_string();
        assert!(msg.contains("not a resource manager's"), "{msg}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
