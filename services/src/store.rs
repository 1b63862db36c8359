//! The state stores, real SQLite files (rusqlite, bundled): the status service's materialized view
//! and the delivery service's facts. WAL journal. The view syncs every commit
//! (`synchronous=FULL`): a commit survives a process crash (what SIGKILL tests) and a power loss
//! (what the simulation's `power-loss` fault checks), and the view can always be rebuilt from the
//! log. The delivery store is a cache of its changelog topic, filled again from it on every start,
//! so it need not sync; it does all the same, as every store on the framework's base
//! (`framework::store`) does.

use std::path::{Path, PathBuf};

pub use framework::store::{private_dir, StoreError};
use framework::store::{remove_db_files, Db};
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::now_ms;
use crate::config::SysConfig;
use crate::domain::{Order, StatusCodes};
use crate::mutants::{self, ShopMutant};
use crate::transport::Record;
use crate::view::{fold, view_update, LogView, OrderRow, OrderStatus, StatusRow, ViewDump, ViewUpdate};

const VIEW_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS order_status (
    order_id  TEXT PRIMARY KEY,
    status    INTEGER NOT NULL,
    status_ts INTEGER NOT NULL,
    stuck     INTEGER NOT NULL DEFAULT 0,
    stuck_ts  INTEGER,
    seen_ts   INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS order_timeline (
    order_id TEXT NOT NULL,
    status   INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    PRIMARY KEY (order_id, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS order_details (
    order_id       TEXT PRIMARY KEY,
    username       TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    sauce          TEXT NOT NULL,
    cheese         TEXT NOT NULL,
    main_topping   TEXT NOT NULL,
    extra_toppings TEXT NOT NULL,
    ordered_ts     INTEGER NOT NULL,
    home           INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS order_details_by_customer ON order_details (customer_id, ordered_ts);
CREATE TABLE IF NOT EXISTS followed (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    topic    TEXT PRIMARY KEY,
    identity TEXT NOT NULL
) WITHOUT ROWID;
";

/// The status service's materialized view: a fold of pizza-status (and of pizza-ordered, for the
/// details customers see).
pub struct ViewStore {
    db: Db,
}

impl ViewStore {
    /// Opens (creating) the view for writing. A view made before `seen_ts` existed gets the
    /// column (its rows then age by their event time until their status next changes).
    pub fn open(path: &Path) -> Result<ViewStore, StoreError> {
        let db = Db::open(path, false, VIEW_SCHEMA)?;
        db.with(|conn| {
            add_column(conn, "order_status", "seen_ts", "INTEGER")?;
            // Details folded before placement was judged are kept as the order's.
            add_column(conn, "order_details", "home", "INTEGER NOT NULL DEFAULT 1")
        })?;
        Ok(ViewStore { db })
    }

    /// Creates a view at `path`, which must not exist yet (a rebuild writes a fresh file).
    pub fn create(path: &Path) -> Result<ViewStore, StoreError> {
        if path.exists() {
            return Err(StoreError::new(
                &path.display().to_string(),
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some("already exists; a rebuild writes a fresh file".into()),
                ),
            ));
        }
        ViewStore::open(path)
    }

    /// Opens an existing view read-only (the web app reads what the status service writes).
    pub fn open_read_only(path: &Path) -> Result<ViewStore, StoreError> {
        Ok(ViewStore {
            db: Db::open(path, true, VIEW_SCHEMA)?,
        })
    }

    /// Folds one status event into the view (one transaction); returns the order's new status if
    /// it changed.
    pub fn apply_status(
        &self,
        codes: &StatusCodes,
        order_id: &str,
        status: i64,
        ts: i64,
        observed: Option<i64>,
    ) -> Result<Option<OrderStatus>, StoreError> {
        self.db.with(|conn| {
            let tx = conn.transaction()?;
            let next = fold_status(&tx, codes, order_id, status, ts, observed)?;
            tx.commit()?;
            Ok(next)
        })
    }

    /// Records an order's details (idempotent: the first pizza-ordered event wins).
    pub fn apply_details(&self, order_id: &str, order: &Order, ordered_at_ms: i64) -> Result<(), StoreError> {
        self.db
            .with(|conn| insert_details(conn, order_id, order, (ordered_at_ms, true)))
    }

    /// Folds many updates in one transaction, in order (rebuilds and batch appliers): the same
    /// rows as applying them one by one, with one commit instead of one per update.
    pub fn apply_many(&self, codes: &StatusCodes, updates: &[ViewUpdate]) -> Result<(), StoreError> {
        self.apply_many_at(codes, updates, &[])
    }

    /// [`ViewStore::apply_many`], recording in the same transaction the offset the log was read
    /// to (`next` per topic and partition): a view that follows the log outside any group
    /// (`view::follow`) starts from there again.
    pub fn apply_many_at(
        &self,
        codes: &StatusCodes,
        updates: &[ViewUpdate],
        read_to: &[(String, i32, i64)],
    ) -> Result<(), StoreError> {
        self.db.with(|conn| {
            let tx = conn.transaction()?;
            for (topic, partition, next) in read_to {
                tx.prepare_cached(
                    "INSERT INTO followed (topic, partition, next) VALUES (?1, ?2, ?3)
                     ON CONFLICT (topic, partition) DO UPDATE SET next = MAX(next, ?3)",
                )?
                .execute(params![topic, partition, next])?;
            }
            for u in updates {
                match u {
                    ViewUpdate::Status {
                        order_id,
                        status,
                        ts,
                        observed,
                    } => {
                        fold_status(&tx, codes, order_id, *status, *ts, *observed)?;
                    }
                    ViewUpdate::Details {
                        order_id,
                        order,
                        ordered_at_ms,
                        home,
                    } => insert_details(&tx, order_id, order, (*ordered_at_ms, *home))?,
                }
            }
            tx.commit()
        })
    }

    /// Where a view that follows the log left off: the next offset per topic and partition.
    pub fn followed(&self) -> Result<Vec<(String, i32, i64)>, StoreError> {
        self.db.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT topic, partition, next FROM followed")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }

    /// Which log each followed topic was (`Transport::log_id`), where it was known.
    pub fn logs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.db.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT topic, identity FROM logs")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Records which log each of `logs`' topics is.
    pub fn set_logs(&self, logs: &[(String, String)]) -> Result<(), StoreError> {
        self.db.with(|conn| {
            let tx = conn.transaction()?;
            for (topic, identity) in logs {
                tx.prepare_cached(
                    "INSERT INTO logs (topic, identity) VALUES (?1, ?2)
                     ON CONFLICT (topic) DO UPDATE SET identity = ?2",
                )?
                .execute(params![topic, identity])?;
            }
            tx.commit()
        })
    }

    /// An order's status alone.
    pub fn status(&self, order_id: &str) -> Result<Option<OrderStatus>, StoreError> {
        self.db.with(|conn| read_status(conn, order_id))
    }

    /// An order with its details and timeline; `None` when the view has never heard of it.
    pub fn order(&self, order_id: &str) -> Result<Option<OrderRow>, StoreError> {
        self.db.with(|conn| {
            let status = read_status(conn, order_id)?;
            let details = conn
                .query_row(
                    "SELECT username, customer_id, sauce, cheese, main_topping, extra_toppings, ordered_ts FROM order_details WHERE order_id = ?1",
                    [order_id],
                    |r| Ok((order_from_row(r, 0)?, r.get::<_, i64>(6)?)),
                )
                .optional()?;
            if status.is_none() && details.is_none() {
                return Ok(None);
            }
            let mut stmt = conn.prepare_cached("SELECT status, ts FROM order_timeline WHERE order_id = ?1 ORDER BY ts, status")?;
            let timeline = stmt.query_map([order_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let (details, ordered_at_ms) = details.map_or((None, None), |(d, ts)| (Some(d), Some(ts)));
            Ok(Some(OrderRow { order_id: order_id.to_owned(), status, details, ordered_at_ms, timeline }))
        })
    }

    /// A customer's order ids, newest first.
    pub fn orders_of(&self, customer_id: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        self.db.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT order_id FROM order_details WHERE customer_id = ?1 ORDER BY ordered_ts DESC, order_id LIMIT ?2",
            )?;
            let ids = stmt.query_map(params![customer_id, limit], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(ids)
        })
    }

    /// Orders that are not final, not already marked stuck, and whose status this view has held
    /// since before `before_ms` by its own clock (`seen_ts`: when the fold took the status). The
    /// event's own timestamp was stamped by another node's clock, which may be off: aged by it,
    /// an order stamped by a clock running behind would be marked early.
    ///
    /// Oldest first, the first `limit` that `keep` takes (the watchdog keeps its own
    /// partitions' orders), of at most `scan` rows read.
    pub fn stuck_candidates(
        &self,
        codes: &StatusCodes,
        before_ms: i64,
        limit: u32,
        scan: u32,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let finals = [
            codes.delivered,
            codes.cancelled,
            codes.something_wrong,
            codes.unknown,
        ];
        let sql = if mutants::on(ShopMutant::WatchdogTrustsEventTime) {
            "SELECT order_id, status FROM order_status
             WHERE stuck = 0 AND status_ts < ?1 AND status NOT IN (?2, ?3, ?4, ?5)
             ORDER BY status_ts LIMIT ?6"
        } else {
            "SELECT order_id, status FROM order_status
             WHERE stuck = 0 AND COALESCE(seen_ts, status_ts) < ?1 AND status NOT IN (?2, ?3, ?4, ?5)
             ORDER BY COALESCE(seen_ts, status_ts) LIMIT ?6"
        };
        self.db.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(
                params![before_ms, finals[0], finals[1], finals[2], finals[3], scan],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )?;
            let mut kept = Vec::new();
            for row in rows {
                let (order_id, status) = row?;
                if keep(&order_id) {
                    kept.push((order_id, status));
                    if kept.len() >= limit as usize {
                        break;
                    }
                }
            }
            Ok(kept)
        })
    }

    /// Replaces every row (and how far the log was read) with those of the view at `other` (a
    /// rebuilt one), in one transaction: a reader sees the rows before or the rows after, never an
    /// order half way back through its statuses.
    pub fn replace_with(&self, other: &Path) -> Result<(), StoreError> {
        let tables = [
            "order_status",
            "order_timeline",
            "order_details",
            "followed",
            "logs",
        ];
        self.db.replace_tables_from(other, &tables)
    }

    /// Whether the view holds nothing at all (a new file, or one whose disk was lost).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.db.with(|conn| {
            conn.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM order_status) AND NOT EXISTS (SELECT 1 FROM order_details)",
                [],
                |r| r.get(0),
            )
        })
    }

    /// How many orders the view knows, by status.
    pub fn count_by_status(&self) -> Result<Vec<(i64, u64)>, StoreError> {
        self.db.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT status, COUNT(*) FROM order_status GROUP BY status ORDER BY status",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// SQLite's `data_version`: changes whenever another connection commits to the file, so a
    /// reader learns cheaply that the view moved.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.db
            .with(|conn| conn.query_row("PRAGMA data_version", [], |r| r.get(0)))
    }

    /// Calls `f` with every order's id and status, in id order, without copying the rows out
    /// (`pizza view watch` reads a whole view many times a second).
    pub fn for_each_status(&self, mut f: impl FnMut(&str, i64)) -> Result<(), StoreError> {
        self.db.with(|conn| {
            let mut s = conn.prepare_cached("SELECT order_id, status FROM order_status")?;
            let mut rows = s.query([])?;
            while let Some(r) = rows.next()? {
                f(r.get_ref(0)?.as_str()?, r.get(1)?);
            }
            Ok(())
        })
    }

    /// Every order's status row (order id, status, status_at_ms, stuck, stuck_at_ms), ordered by id.
    pub fn status_rows(&self) -> Result<Vec<StatusRow>, StoreError> {
        self.db.with(|conn| status_rows(conn))
    }

    /// Every row, ordered.
    pub fn dump(&self) -> Result<ViewDump, StoreError> {
        self.db.with(|conn| {
            let mut d = ViewDump {
                status: status_rows(conn)?,
                ..ViewDump::default()
            };
            let mut s = conn.prepare("SELECT order_id, status, ts FROM order_timeline ORDER BY order_id, status")?;
            d.timeline = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
            let mut s = conn.prepare(
                "SELECT order_id, username, customer_id, sauce, cheese, main_topping, extra_toppings, ordered_ts FROM order_details ORDER BY order_id",
            )?;
            d.details = s
                .query_map([], |r| Ok((r.get(0)?, order_from_row(r, 1)?, r.get(7)?)))?
                .collect::<Result<_, _>>()?;
            Ok(d)
        })
    }
}

impl LogView for ViewStore {
    type Context = SysConfig;
    type Update = ViewUpdate;
    type Error = StoreError;

    /// The shop's fold of a record of pizza-ordered or pizza-status ([`view_update`]).
    fn update(sys: &SysConfig, rec: &Record, partitions: Option<i32>) -> Option<ViewUpdate> {
        view_update(sys, rec, partitions).ok()
    }

    fn followed(&self) -> Result<Vec<(String, i32, i64)>, StoreError> {
        ViewStore::followed(self)
    }

    /// The file beside this one (`orders.rebuild.db` beside `orders.db`), opened (made when
    /// missing) with what an earlier first fold left in it, or made anew when `fresh`.
    fn scratch(&self, fresh: bool) -> Result<ViewStore, StoreError> {
        let path = scratch_path(Path::new(self.db.path()));
        if fresh {
            remove_db_files(&path);
        }
        ViewStore::open(&path)
    }

    fn logs(&self) -> Result<Vec<(String, String)>, StoreError> {
        ViewStore::logs(self)
    }

    fn set_logs(&self, logs: &[(String, String)]) -> Result<(), StoreError> {
        ViewStore::set_logs(self, logs)
    }

    fn take_from(&self, scratch: ViewStore) -> Result<(), StoreError> {
        let path = PathBuf::from(scratch.db.path());
        drop(scratch);
        self.replace_with(&path)?;
        remove_db_files(&path);
        Ok(())
    }

    fn apply_at(
        &self,
        sys: &SysConfig,
        updates: &[ViewUpdate],
        read_to: &[(String, i32, i64)],
    ) -> Result<(), StoreError> {
        ViewStore::apply_many_at(self, &sys.codes, updates, read_to)
    }
}

/// Where a view at `path` folds a first pass of the log that readers must not see half of.
fn scratch_path(path: &Path) -> PathBuf {
    path.with_extension("rebuild.db")
}

fn status_rows(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<StatusRow>> {
    let mut s = conn.prepare_cached(
        "SELECT order_id, status, status_ts, stuck, stuck_ts FROM order_status ORDER BY order_id",
    )?;
    let rows = s.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    rows.collect()
}

/// An order's details from the columns username .. extra_toppings, starting at `first`.
fn order_from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Order> {
    let extras: String = r.get(first + 5)?;
    Ok(Order {
        username: r.get(first)?,
        customer_id: r.get(first + 1)?,
        sauce: r.get(first + 2)?,
        cheese: r.get(first + 3)?,
        main_topping: r.get(first + 4)?,
        extra_toppings: serde_json::from_str(&extras).unwrap_or_default(),
    })
}

fn fold_status(
    conn: &Connection,
    codes: &StatusCodes,
    order_id: &str,
    status: i64,
    ts: i64,
    observed: Option<i64>,
) -> rusqlite::Result<Option<OrderStatus>> {
    let current = read_status(conn, order_id)?;
    let next = fold(codes, current.as_ref(), status, ts, observed);
    if let Some(n) = &next {
        // `seen_ts` is this node's clock when the status changed (a stuck mark leaves it).
        conn.prepare_cached(
            "INSERT INTO order_status (order_id, status, status_ts, stuck, stuck_ts, seen_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (order_id) DO UPDATE SET status = ?2, status_ts = ?3, stuck = ?4, stuck_ts = ?5,
                 seen_ts = CASE WHEN order_status.status = ?2 THEN COALESCE(order_status.seen_ts, ?6) ELSE ?6 END",
        )?
        .execute(params![order_id, n.status, n.status_at_ms, n.stuck, n.stuck_at_ms, now_ms()])?;
        conn.prepare_cached(
            "INSERT OR IGNORE INTO order_timeline (order_id, status, ts) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![order_id, status, ts])?;
    }
    Ok(next)
}

/// Adds `column` (of SQL type `kind`) to `table` of a file made before the column existed.
fn add_column(conn: &Connection, table: &str, column: &str, kind: &str) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
    }
    Ok(())
}

/// An order's details: the first kept, unless these are from its key's murmur2 partition and
/// the kept ones are not (`ViewUpdate::Details`).
fn insert_details(
    conn: &Connection,
    order_id: &str,
    order: &Order,
    (ordered_at_ms, home): (i64, bool),
) -> rusqlite::Result<()> {
    let extras = serde_json::to_string(&order.extra_toppings).expect("strings serialize");
    conn.prepare_cached(
        "INSERT INTO order_details (order_id, username, customer_id, sauce, cheese, main_topping, extra_toppings, ordered_ts, home)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (order_id) DO UPDATE SET username = excluded.username, customer_id = excluded.customer_id,
             sauce = excluded.sauce, cheese = excluded.cheese, main_topping = excluded.main_topping,
             extra_toppings = excluded.extra_toppings, ordered_ts = excluded.ordered_ts, home = 1
         WHERE order_details.home = 0 AND excluded.home = 1",
    )?
    .execute(params![order_id, order.username, order.customer_id, order.sauce, order.cheese, order.main_topping, extras, ordered_at_ms, home])?;
    Ok(())
}

fn read_status(conn: &Connection, order_id: &str) -> rusqlite::Result<Option<OrderStatus>> {
    conn.prepare_cached("SELECT status, status_ts, stuck, stuck_ts FROM order_status WHERE order_id = ?1")?
        .query_row([order_id], |r| {
            Ok(OrderStatus {
                status: r.get(0)?,
                status_at_ms: r.get(1)?,
                stuck: r.get(2)?,
                stuck_at_ms: r.get(3)?,
            })
        })
        .optional()
}

const DELIVERY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery_facts (
    order_id     TEXT PRIMARY KEY,
    customer_id  TEXT,
    baked        INTEGER NOT NULL DEFAULT 0,
    pending      INTEGER NOT NULL DEFAULT 0,
    claimed_ts   INTEGER,
    claim_offset INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    topic    TEXT PRIMARY KEY,
    identity TEXT NOT NULL
) WITHOUT ROWID;
";

/// What the delivery service knows of one order: the fold of the facts its changelog holds for
/// it (`services::changelog`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// From pizza-ordered: the early warning of where to deliver.
    pub customer_id: Option<String>,
    /// pizza-baked was seen.
    pub baked: bool,
    /// The pizza was baked before the order was known: pizza-pending, and twice the drive.
    pub pending: bool,
    /// The driver sent out: the first claim in the changelog, which every owner of the partition
    /// announces and no one sends out again.
    pub claim: Option<Claim>,
}

/// A driver sent out for an order: when it arrives, and the changelog offset of the claim (so
/// its writer knows whether its claim is the one that stands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub at_ms: i64,
    pub offset: i64,
}

/// A fact about an order, as the changelog carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryFact {
    /// pizza-ordered: where it goes.
    Customer(String),
    /// pizza-baked.
    Baked,
    /// A driver is out, arriving at this time (epoch ms); the pizza was baked.
    Claimed { at_ms: i64 },
}

/// The delivery service's store: the fold of its changelog's partitions, a cache that a restart
/// or a newly assigned partition fills again from the log. So it syncs no commit
/// (`synchronous=NORMAL`: a power loss may take its last commits, never its consistency).
pub struct DeliveryStore {
    /// A second connection for reads, so they do not wait behind a commit (WAL lets one
    /// writer and readers go at once); none for an in-memory store, which is one connection's.
    /// Declared first, so it closes first: the writer, closing last, checkpoints the WAL.
    reader: Option<Db>,
    db: Db,
}

impl DeliveryStore {
    /// Opens (creating) the store.
    pub fn open(path: &Path) -> Result<DeliveryStore, StoreError> {
        let db = Db::open(path, false, DELIVERY_SCHEMA)?;
        db.with(|conn| conn.pragma_update(None, "synchronous", "NORMAL"))?;
        let reader = if path.as_os_str() == ":memory:" {
            None
        } else {
            Some(Db::open(path, true, "")?)
        };
        Ok(DeliveryStore { db, reader })
    }

    /// What is known of an order.
    pub fn get(&self, order_id: &str) -> Result<DeliveryState, StoreError> {
        self.reader.as_ref().unwrap_or(&self.db).with(|conn| {
            conn.prepare_cached(
                "SELECT customer_id, baked, pending, claimed_ts, claim_offset
                 FROM delivery_facts WHERE order_id = ?1",
            )?
            .query_row([order_id], |r| {
                let claim = match (r.get::<_, Option<i64>>(3)?, r.get::<_, Option<i64>>(4)?) {
                    (Some(at_ms), Some(offset)) => Some(Claim { at_ms, offset }),
                    _ => None,
                };
                Ok(DeliveryState {
                    customer_id: r.get(0)?,
                    baked: r.get(1)?,
                    pending: r.get(2)?,
                    claim,
                })
            })
            .optional()
            .map(Option::unwrap_or_default)
        })
    }

    /// Which log the store's facts come from (`Transport::log_id` of the changelog), if known.
    pub fn log_id(&self, topic: &str) -> Result<Option<String>, StoreError> {
        self.db.with(|conn| {
            conn.query_row("SELECT identity FROM logs WHERE topic = ?1", [topic], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// The changelog `topic` is the log `identity` now: when it was another, every fact of the
    /// old one is forgotten (the partitions restore from the new log as they are needed). Returns
    /// whether it was another.
    pub fn follow_log(&self, topic: &str, identity: &str) -> Result<bool, StoreError> {
        self.db.with(|conn| {
            let tx = conn.transaction()?;
            let was: Option<String> = tx
                .query_row("SELECT identity FROM logs WHERE topic = ?1", [topic], |r| {
                    r.get(0)
                })
                .optional()?;
            let other = was.is_some_and(|w| crate::transport::other_log(&w, identity));
            if other {
                tx.execute("DELETE FROM delivery_facts", [])?;
            }
            tx.execute(
                "INSERT INTO logs (topic, identity) VALUES (?1, ?2)
                 ON CONFLICT (topic) DO UPDATE SET identity = ?2",
                params![topic, identity],
            )?;
            tx.commit()?;
            Ok(other)
        })
    }

    /// Folds `facts` (order id, changelog offset, fact) in, in one transaction, in the order
    /// given, which must be the log's for claims: the first customer and the first claim of an
    /// order stand, and the order is pending when it was baked before its customer was known.
    /// Folding a fact again changes nothing.
    pub fn apply(&self, facts: &[(String, i64, DeliveryFact)]) -> Result<(), StoreError> {
        self.db.with(|conn| {
            let tx = conn.transaction()?;
            for (order_id, offset, fact) in facts {
                match fact {
                    DeliveryFact::Customer(c) => tx
                        .prepare_cached(
                            "INSERT INTO delivery_facts (order_id, customer_id) VALUES (?1, ?2)
                             ON CONFLICT (order_id) DO UPDATE SET customer_id = COALESCE(customer_id, ?2)",
                        )?
                        .execute(params![order_id, c])?,
                    DeliveryFact::Baked => tx
                        .prepare_cached(
                            "INSERT INTO delivery_facts (order_id, baked, pending) VALUES (?1, 1, 1)
                             ON CONFLICT (order_id) DO UPDATE SET
                               pending = CASE WHEN baked = 0 AND customer_id IS NULL THEN 1 ELSE pending END,
                               baked = 1",
                        )?
                        .execute(params![order_id])?,
                    // A claim says the pizza was baked too: deliver claims straight from a
                    // pizza-baked whose order it knows, without a separate bake fact.
                    DeliveryFact::Claimed { at_ms } => tx
                        .prepare_cached(
                            "INSERT INTO delivery_facts (order_id, baked, claimed_ts, claim_offset) VALUES (?1, 1, ?2, ?3)
                             ON CONFLICT (order_id) DO UPDATE SET
                               baked = 1,
                               claim_offset = COALESCE(claim_offset, ?3),
                               claimed_ts = COALESCE(claimed_ts, ?2)",
                        )?
                        .execute(params![order_id, at_ms, offset])?,
                };
            }
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_view_replaces_an_empty_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let codes = StatusCodes::default();
        let live = ViewStore::open(&dir.path().join("orders.db")).unwrap();
        assert!(live.is_empty().unwrap());
        let rebuilt_path = dir.path().join("orders.rebuild.db");
        let rebuilt = ViewStore::create(&rebuilt_path).unwrap();
        rebuilt.apply_status(&codes, "a", 100, 1, None).unwrap();
        rebuilt.apply_status(&codes, "a", 999, 2, None).unwrap();
        rebuilt.apply_status(&codes, "b", 200, 3, None).unwrap();
        drop(rebuilt);
        live.replace_with(&rebuilt_path).unwrap();
        assert!(!live.is_empty().unwrap());
        let rows: Vec<(String, i64)> = live
            .status_rows()
            .unwrap()
            .into_iter()
            .map(|r| (r.0, r.1))
            .collect();
        assert_eq!(rows, [("a".to_owned(), 999), ("b".to_owned(), 200)]);
        assert_eq!(live.dump().unwrap().timeline.len(), 3);
        // The live view is still the one written to.
        live.apply_status(&codes, "b", 300, 4, None).unwrap();
        assert_eq!(live.status_rows().unwrap()[1].1, 300);
    }

    /// An order's details are the first folded, but details from the key's murmur2 partition
    /// take the place of details from librdkafka's partition, and never the other way round.
    #[test]
    fn details_from_the_keys_home_partition_are_the_orders() {
        let dir = tempfile::tempdir().unwrap();
        let view = ViewStore::open(&dir.path().join("orders.db")).unwrap();
        let codes = StatusCodes::default();
        let details = |customer: &str, home: bool| ViewUpdate::Details {
            order_id: "a".into(),
            order: Order {
                username: customer.into(),
                customer_id: customer.into(),
                sauce: "Tomato".into(),
                cheese: "Mozzarella".into(),
                main_topping: "Pepperoni".into(),
                extra_toppings: Vec::new(),
            },
            ordered_at_ms: 1,
            home,
        };
        let customer = |view: &ViewStore| view.order("a").unwrap().unwrap().details.unwrap().customer_id;
        view.apply_many(&codes, &[details("taker", false), details("owner", true)])
            .unwrap();
        assert_eq!(
            customer(&view),
            "owner",
            "home details take the place of the other's"
        );
        view.apply_many(&codes, &[details("taker", false), details("again", true)])
            .unwrap();
        assert_eq!(customer(&view), "owner", "the first home details stay");
        let other = ViewStore::open(&dir.path().join("other.db")).unwrap();
        other
            .apply_many(&codes, &[details("first", false), details("second", false)])
            .unwrap();
        assert_eq!(
            customer(&other),
            "first",
            "among details from elsewhere the first stays"
        );
    }

    #[test]
    fn a_view_made_before_seen_ts_gets_the_column_and_the_watchdog_ages_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE order_status (order_id TEXT PRIMARY KEY, status INTEGER NOT NULL,
                 status_ts INTEGER NOT NULL, stuck INTEGER NOT NULL DEFAULT 0, stuck_ts INTEGER) WITHOUT ROWID;
             INSERT INTO order_status VALUES ('a', 200, 1000, 0, NULL);",
        )
        .unwrap();
        drop(old);
        let view = ViewStore::open(&path).unwrap();
        let codes = StatusCodes::default();
        let candidates = |before| view.stuck_candidates(&codes, before, 10, 100, |_| true).unwrap();
        // A row from before the column ages by its event time.
        assert_eq!(candidates(2_000), [("a".to_owned(), 200)]);
        // A status taken now ages from now, though its event says it is from long ago (a clock
        // far behind stamped it).
        view.apply_status(&codes, "b", 300, 5, None).unwrap();
        let now = now_ms();
        assert!(candidates(now - 60_000).iter().all(|(o, _)| o != "b"));
        assert!(candidates(now + 60_000).iter().any(|(o, _)| o == "b"));
        // A stuck mark leaves the time the status was taken; progress renews it.
        view.apply_status(&codes, "b", codes.stuck, now, Some(300))
            .unwrap();
        view.apply_status(&codes, "b", 999, 6, None).unwrap();
        assert!(candidates(now + 60_000).iter().all(|(o, _)| o != "b"), "final");
    }

    /// A first fold goes on in its scratch file from where an earlier attempt left it, and the
    /// view takes the rows and how far they read in one piece; the scratch file is gone after.
    #[test]
    fn a_first_fold_goes_on_in_its_scratch_file_and_is_taken_whole() {
        let dir = tempfile::tempdir().unwrap();
        let codes = StatusCodes::default();
        let view = ViewStore::open(&dir.path().join("orders.db")).unwrap();
        let update = |status| ViewUpdate::Status {
            order_id: "a".into(),
            status,
            ts: 1,
            observed: None,
        };
        let scratch = view.scratch(false).unwrap();
        scratch
            .apply_many_at(&codes, &[update(100)], &[("pizza-status".into(), 0, 1)])
            .unwrap();
        drop(scratch); // the attempt failed
        let scratch = view.scratch(false).unwrap();
        assert_eq!(scratch.followed().unwrap(), [("pizza-status".to_owned(), 0, 1)]);
        scratch
            .apply_many_at(&codes, &[update(999)], &[("pizza-status".into(), 0, 2)])
            .unwrap();
        assert!(view.is_empty().unwrap(), "readers see nothing of a first fold");
        view.take_from(scratch).unwrap();
        assert_eq!(view.status("a").unwrap().map(|s| s.status), Some(999));
        assert_eq!(view.followed().unwrap(), [("pizza-status".to_owned(), 0, 2)]);
        assert!(!dir.path().join("orders.rebuild.db").exists());
    }

    /// The watchdog's own candidates: oldest first, those `keep` takes, at most `limit` of them
    /// from at most `scan` rows.
    #[test]
    fn stuck_candidates_keep_the_instances_own_within_the_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let view = ViewStore::open(&dir.path().join("orders.db")).unwrap();
        let codes = StatusCodes::default();
        for i in 0..10 {
            view.apply_status(&codes, &format!("o{i}"), 200, i, None).unwrap();
        }
        let later = now_ms() + 60_000;
        let even = |o: &str| o.as_bytes()[1] % 2 == 0;
        let ids = |c: Vec<(String, i64)>| c.into_iter().map(|(o, _)| o).collect::<Vec<_>>();
        let all = ids(view.stuck_candidates(&codes, later, 100, 100, |_| true).unwrap());
        assert_eq!(all.len(), 10);
        let mine = ids(view.stuck_candidates(&codes, later, 100, 100, even).unwrap());
        assert_eq!(mine, all.iter().filter(|o| even(o)).cloned().collect::<Vec<_>>());
        assert_eq!(
            view.stuck_candidates(&codes, later, 2, 100, even).unwrap().len(),
            2,
            "limit"
        );
        let scanned = ids(view.stuck_candidates(&codes, later, 100, 4, even).unwrap());
        assert_eq!(
            scanned,
            all[..4].iter().filter(|o| even(o)).cloned().collect::<Vec<_>>(),
            "scan"
        );
    }

    /// The fold keeps the first customer and the first claim, in the order the facts come, and
    /// an order is pending only when it was baked before its customer was known; folding the
    /// same facts again (a restore from the start of the log) changes nothing.
    #[test]
    fn delivery_facts_fold_first_claim_wins_and_pending_by_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeliveryStore::open(&dir.path().join("delivery.db")).unwrap();
        let customer = |c: &str| DeliveryFact::Customer(c.into());
        let facts = vec![
            ("a".to_owned(), 0, customer("ab")),
            ("a".to_owned(), 1, DeliveryFact::Baked),
            ("b".to_owned(), 2, DeliveryFact::Baked),
            ("b".to_owned(), 3, customer("cd")),
            ("a".to_owned(), 4, DeliveryFact::Claimed { at_ms: 50 }),
            ("a".to_owned(), 5, DeliveryFact::Claimed { at_ms: 40 }),
            ("a".to_owned(), 6, customer("zz")),
            ("c".to_owned(), 7, DeliveryFact::Claimed { at_ms: 9 }),
        ];
        store.apply(&facts).unwrap();
        let a = store.get("a").unwrap();
        assert_eq!(a.customer_id.as_deref(), Some("ab"));
        assert!(a.baked && !a.pending);
        assert_eq!(a.claim, Some(Claim { at_ms: 50, offset: 4 }));
        let b = store.get("b").unwrap();
        assert!(b.baked && b.pending, "baked before its customer: {b:?}");
        assert_eq!(b.customer_id.as_deref(), Some("cd"));
        store.apply(&facts).unwrap();
        assert_eq!(store.get("a").unwrap(), a);
        assert_eq!(store.get("b").unwrap(), b);
        let c = store.get("c").unwrap();
        assert!(c.baked && !c.pending, "a claim says baked: {c:?}");
        assert_eq!(store.get("d").unwrap(), DeliveryState::default());
    }
}
