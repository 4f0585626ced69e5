//! State in SQLite: one API call is one transaction, scoped to an (account, region).
//!
//! Resources are stored as JSON documents of their generated model shape, so what Describe*
//! returns is exactly what was stored; tags live in their own table because every family
//! shares them.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::model::Tag;

/// Versioned migrations; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &["CREATE TABLE resources (
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (account, region, kind, id)
    );
    CREATE TABLE tags (
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (account, region, resource_id, key)
    );
    CREATE TABLE idempotency (
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        action TEXT NOT NULL,
        token TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        response TEXT NOT NULL,
        PRIMARY KEY (account, region, action, token)
    );
    CREATE TABLE seeded (
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        PRIMARY KEY (account, region)
    );"];

/// The region value of an account's global scope. IAM (roles, instance profiles and the
/// credentials issued for them) is global to an account rather than regional, so its records
/// live under this value, which no real region has; EC2 handlers reach it through the `*_in`
/// accessors of their own transaction.
pub const GLOBAL: &str = "global";

pub struct Store {
    conn: Mutex<Inner>,
}

struct Inner {
    conn: Connection,
    cache: ReadCache,
}

/// Decoded results of `Tx::list` (and the tag table) per (account, region, kind), so a
/// Describe call does not re-read and re-parse JSON it parsed a moment ago. Only
/// transactions that have not written fill it, and every write drops the entries it touches,
/// so it never holds uncommitted or stale data.
#[derive(Default)]
struct ReadCache {
    entries: HashMap<String, Arc<dyn Any + Send + Sync>>,
}

const TAGS: &str = "\0tags";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("migration to version {version} failed: {source}")]
    Migrate {
        version: usize,
        source: rusqlite::Error,
    },
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // ec2d is the database's only user; holding the lock saves two fcntl calls per
        // transaction, which is a large share of a Describe call's cost.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(Inner {
                conn,
                cache: ReadCache::default(),
            }),
        })
    }

    /// Every (account, region) that has state.
    pub fn scopes(&self) -> Result<Vec<(String, String)>, ApiError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        let mut stmt = conn
            .conn
            .prepare("SELECT account, region FROM seeded ORDER BY account, region")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs `f` over every account and region at once, for the data plane, which serves all
    /// of them. Every write holds the same lock, so what `f` reads is one consistent view.
    pub fn read_all_scopes<R>(
        &self,
        f: impl FnOnce(&AllScopes<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let inner = self
            .conn
            .lock()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        f(&AllScopes { conn: &inner.conn })
    }

    /// Runs `f` in one transaction for the caller's (account, region); commits only on success.
    pub fn transaction<R>(
        &self,
        account: &str,
        region: &str,
        f: impl FnOnce(&Tx<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let mut inner = self
            .conn
            .lock()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        let Inner { conn, cache } = &mut *inner;
        let tx = conn.transaction()?;
        let scoped = Tx {
            tx,
            account: account.to_string(),
            region: region.to_string(),
            cache: RefCell::new(cache),
            dirty: Cell::new(false),
        };
        let out = f(&scoped)?;
        scoped.tx.commit()?;
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map(|v| v as usize)
        .map_err(|source| StoreError::Migrate { version: 0, source })?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i + 1;
        let err = |source| StoreError::Migrate { version, source };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// Reads across every account and region; see [`Store::read_all_scopes`].
pub struct AllScopes<'c> {
    conn: &'c Connection,
}

impl AllScopes<'_> {
    /// Resources of a kind, as (account, region, resource), oldest first.
    pub fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, String, T)>, ApiError> {
        all_scopes(self.conn, kind)
    }
}

fn all_scopes<T: DeserializeOwned>(
    conn: &Connection,
    kind: &str,
) -> Result<Vec<(String, String, T)>, ApiError> {
    let mut stmt = conn
        .prepare_cached("SELECT account, region, body FROM resources WHERE kind=?1 ORDER BY seq")?;
    let rows = stmt.query_map(params![kind], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (account, region, body) = row?;
        out.push((account, region, serde_json::from_str(&body)?));
    }
    Ok(out)
}

/// A transaction scoped to one account and region. Every query goes through it.
pub struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    pub account: String,
    pub region: String,
    cache: RefCell<&'c mut ReadCache>,
    /// Set by the first write; from then on reads bypass the cache.
    dirty: Cell<bool>,
}

impl Tx<'_> {
    fn cache_key(&self, kind: &str) -> String {
        self.cache_key_in(&self.region, kind)
    }

    fn cache_key_in(&self, region: &str, kind: &str) -> String {
        format!("{}\0{region}\0{kind}", self.account)
    }

    fn cached<T: Clone + 'static>(&self, kind: &str) -> Option<T> {
        if self.dirty.get() {
            return None;
        }
        let cache = self.cache.borrow();
        cache
            .entries
            .get(&self.cache_key(kind))
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    fn remember_read<T: Send + Sync + 'static>(&self, kind: &str, value: T) {
        if !self.dirty.get() {
            let key = self.cache_key(kind);
            self.cache.borrow_mut().entries.insert(key, Arc::new(value));
        }
    }

    fn wrote(&self, kind: &str) {
        self.wrote_in(&self.region, kind);
    }

    fn wrote_in(&self, region: &str, kind: &str) {
        self.dirty.set(true);
        let key = self.cache_key_in(region, kind);
        self.cache.borrow_mut().entries.remove(&key);
    }

    pub fn get<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Option<T>, ApiError> {
        self.get_in(&self.region, kind, id)
    }

    /// `get` in another region scope of the same account (in practice [`GLOBAL`]).
    pub fn get_in<T: DeserializeOwned>(
        &self,
        region: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<T>, ApiError> {
        let body: Option<String> = self
            .tx
            .query_row(
                "SELECT body FROM resources WHERE account=?1 AND region=?2 AND kind=?3 AND id=?4",
                params![self.account, region, kind, id],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(ApiError::from))
            .transpose()
    }

    /// Every resource of a kind in another region scope of the same account, oldest first.
    /// Not cached: it serves the global scope, which is small and read by few calls.
    pub fn list_in<T: DeserializeOwned>(
        &self,
        region: &str,
        kind: &str,
    ) -> Result<Vec<T>, ApiError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT body FROM resources WHERE account=?1 AND region=?2 AND kind=?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![self.account, region, kind], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    pub fn exists(&self, kind: &str, id: &str) -> Result<bool, ApiError> {
        Ok(self
            .tx
            .query_row(
                "SELECT 1 FROM resources WHERE account=?1 AND region=?2 AND kind=?3 AND id=?4",
                params![self.account, self.region, kind, id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Every resource of a kind, oldest first.
    pub fn list<T: DeserializeOwned + Clone + Send + Sync + 'static>(
        &self,
        kind: &str,
    ) -> Result<Vec<T>, ApiError> {
        if let Some(hit) = self.cached::<Vec<T>>(kind) {
            return Ok(hit);
        }
        let mut stmt = self.tx.prepare_cached(
            "SELECT body FROM resources WHERE account=?1 AND region=?2 AND kind=?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![self.account, self.region, kind], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out: Vec<T> = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        self.remember_read(kind, out.clone());
        Ok(out)
    }

    /// Resources of a kind in this region across every account, for what EC2 lets accounts
    /// share (public and shared AMIs): (owning account, resource).
    pub fn list_region_wide<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, T)>, ApiError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT account, body FROM resources WHERE region=?1 AND kind=?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![self.region, kind], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (account, body) = row?;
            out.push((account, serde_json::from_str(&body)?));
        }
        Ok(out)
    }

    /// Resources of a kind in every account and region, as (account, region, resource),
    /// seeing this transaction's own writes: for what must be unique across all of ec2d.
    pub fn list_all_scopes<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, String, T)>, ApiError> {
        all_scopes(&self.tx, kind)
    }

    pub fn insert<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> Result<(), ApiError> {
        self.insert_in(&self.region, kind, id, value)
    }

    /// `insert` in another region scope of the same account (in practice [`GLOBAL`]).
    pub fn insert_in<T: Serialize>(
        &self,
        region: &str,
        kind: &str,
        id: &str,
        value: &T,
    ) -> Result<(), ApiError> {
        self.wrote_in(region, kind);
        let body = serde_json::to_string(value)?;
        self.tx.execute(
            "INSERT INTO resources (account, region, kind, id, seq, body)
             VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM resources), ?5)",
            params![self.account, region, kind, id, body],
        )?;
        Ok(())
    }

    pub fn update<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> Result<(), ApiError> {
        self.update_in(&self.region, kind, id, value)
    }

    /// `update` in another region scope of the same account (in practice [`GLOBAL`]).
    pub fn update_in<T: Serialize>(
        &self,
        region: &str,
        kind: &str,
        id: &str,
        value: &T,
    ) -> Result<(), ApiError> {
        self.wrote_in(region, kind);
        let body = serde_json::to_string(value)?;
        self.tx.execute(
            "UPDATE resources SET body=?5 WHERE account=?1 AND region=?2 AND kind=?3 AND id=?4",
            params![self.account, region, kind, id, body],
        )?;
        Ok(())
    }

    pub fn delete(&self, kind: &str, id: &str) -> Result<(), ApiError> {
        self.delete_in(&self.region, kind, id)
    }

    /// `delete` in another region scope of the same account (in practice [`GLOBAL`]).
    pub fn delete_in(&self, region: &str, kind: &str, id: &str) -> Result<(), ApiError> {
        self.wrote_in(region, kind);
        self.wrote_in(region, TAGS);
        self.tx.execute(
            "DELETE FROM resources WHERE account=?1 AND region=?2 AND kind=?3 AND id=?4",
            params![self.account, region, kind, id],
        )?;
        self.tx.execute(
            "DELETE FROM tags WHERE account=?1 AND region=?2 AND resource_id=?3",
            params![self.account, region, id],
        )?;
        Ok(())
    }

    /// Which kind of resource an id names, if it exists in this scope.
    pub fn kind_of(&self, id: &str) -> Result<Option<String>, ApiError> {
        Ok(self
            .tx
            .query_row(
                "SELECT kind FROM resources WHERE account=?1 AND region=?2 AND id=?3",
                params![self.account, self.region, id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn tags(&self, resource_id: &str) -> Result<Vec<Tag>, ApiError> {
        if let Some(all) = self.cached::<Arc<HashMap<String, Vec<Tag>>>>(TAGS) {
            return Ok(all.get(resource_id).cloned().unwrap_or_default());
        }
        if !self.dirty.get() {
            // One query for the whole scope serves every resource of a Describe call.
            let mut by_id: HashMap<String, Vec<Tag>> = HashMap::new();
            for (id, tag) in self.all_tags()? {
                by_id.entry(id).or_default().push(tag);
            }
            let found = by_id.get(resource_id).cloned().unwrap_or_default();
            self.remember_read(TAGS, Arc::new(by_id));
            return Ok(found);
        }
        let mut stmt = self.tx.prepare_cached(
            "SELECT key, value FROM tags WHERE account=?1 AND region=?2 AND resource_id=?3 ORDER BY key",
        )?;
        let rows = stmt.query_map(params![self.account, self.region, resource_id], |r| {
            Ok(Tag {
                key: Some(r.get(0)?),
                value: Some(r.get(1)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Tags of every resource in scope: (resource id, tag), ordered by id then key.
    pub fn all_tags(&self) -> Result<Vec<(String, Tag)>, ApiError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT resource_id, key, value FROM tags WHERE account=?1 AND region=?2
             ORDER BY resource_id, key",
        )?;
        let rows = stmt.query_map(params![self.account, self.region], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Tag {
                    key: Some(r.get(1)?),
                    value: Some(r.get(2)?),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_tag(&self, resource_id: &str, key: &str, value: &str) -> Result<(), ApiError> {
        self.wrote(TAGS);
        self.tx.execute(
            "INSERT INTO tags (account, region, resource_id, key, value) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (account, region, resource_id, key) DO UPDATE SET value=excluded.value",
            params![self.account, self.region, resource_id, key, value],
        )?;
        Ok(())
    }

    pub fn delete_tag(
        &self,
        resource_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ApiError> {
        self.wrote(TAGS);
        match value {
            Some(v) => self.tx.execute(
                "DELETE FROM tags WHERE account=?1 AND region=?2 AND resource_id=?3 AND key=?4 AND value=?5",
                params![self.account, self.region, resource_id, key, v],
            )?,
            None => self.tx.execute(
                "DELETE FROM tags WHERE account=?1 AND region=?2 AND resource_id=?3 AND key=?4",
                params![self.account, self.region, resource_id, key],
            )?,
        };
        Ok(())
    }

    /// A stored response for a ClientToken: (fingerprint of the request, response XML).
    pub fn idempotent(
        &self,
        action: &str,
        token: &str,
    ) -> Result<Option<(String, String)>, ApiError> {
        Ok(self
            .tx
            .query_row(
                "SELECT fingerprint, response FROM idempotency
                 WHERE account=?1 AND region=?2 AND action=?3 AND token=?4",
                params![self.account, self.region, action, token],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn remember(
        &self,
        action: &str,
        token: &str,
        fingerprint: &str,
        response: &str,
    ) -> Result<(), ApiError> {
        self.tx.execute(
            "INSERT OR REPLACE INTO idempotency (account, region, action, token, fingerprint, response)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.account, self.region, action, token, fingerprint, response],
        )?;
        Ok(())
    }

    /// True the first time it is asked for this scope; used to create the default VPC once.
    pub fn first_use(&self) -> Result<bool, ApiError> {
        let n = self.tx.execute(
            "INSERT OR IGNORE INTO seeded (account, region) VALUES (?1, ?2)",
            params![self.account, self.region],
        )?;
        Ok(n == 1)
    }
}
