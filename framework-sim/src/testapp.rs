//! The testing application: the smallest service set that exercises what the framework promises,
//! with an oracle of its own, so the framework's guarantees are proven without any real
//! application (TigerBeetle keeps such a state machine beside its real one). It is also the
//! first user of [`crate::world`], as any application's simulation is written.
//!
//! One stage, `tally`, runs on the framework's worker in one consumer group (one or two
//! instances): each input on `tally-in` (key `k<n>`, value `seq=<n>`) becomes one output on
//! `tally-out` with the same key, naming the input it came from (its key and sequence number, the
//! input's identity on any log of the topic) and its count, the how-manieth input of its key it
//! is (`seq=<n> count=<c>`), written durably before the input is marked done. The count is
//! per-key state that follows partitions: each input is a fact on `tally-changelog` (the
//! framework's [`framework::changelog`]), restored before a partition's records are handled, into
//! a store kept in memory (a crash loses it all). Anything else is not an input: the stage
//! calls it malformed and the worker dead-letters it to `tally-dlq`. The feeder writes the inputs
//! at the seed's pace, among them malformed values, header keys that are not UTF-8, records too
//! large for a shrunken dead-letter topic, batches no client can decode and bare transaction
//! markers (on the input and on the changelog: a log may end with one), while the world's faults
//! hit.
//!
//! A second service, `board`, keeps a view of `tally-out` with the framework's follower, outside
//! any group, in a SQLite file on the framework's store base (a lost disk loses it: it is folded
//! again from the log's start, aside; a power loss keeps what the file synced).
//!
//! Its oracle reads the broker's logs once the group caught up, beside the world's invariants:
//! - `no-input-lost`: every input on the log has an output (at least once);
//! - `one-effect`: every copy of an input's output is the same record, with the count the oracle
//!   counts on the input log, and no output names an input that is not on the log (a redelivery
//!   repeats the effect, never changes it; state lost or restored short shows as a wrong count);
//! - `per-key-order`: per key, outputs first appear in the order of their inputs on the log;
//! - `malformed-dead-lettered`: every record the stage cannot use has a dead-letter note naming
//!   it (unless the broker refused even a bare note of it);
//! - `view-follows-log`: every board counts, per key, the inputs with an output on the log;
//! - `board-moves-forward`: read every half second, a board's count of a key never goes down
//!   while it reads the same logs (what it showed survives a crash and a power loss).
//!
//! `framework-sim/tests/testapp.rs` switches each framework mutant on and asserts some seed of
//! this application catches it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use framework::app::{Application, Instance, Stopped};
use framework::changelog::{Changelog, FactStore};
use framework::error::Malformed;
use framework::probes::Hits;
use framework::shutdown::Shutdown;
use framework::store::rusqlite::params;
use framework::store::{remove_db_files, Db, StoreError};
use framework::transport::{OutRecord, RawRecord, Record, Transport};
use framework::worker::{run_worker, HandleError, Handler, WorkerConfig, WorkerStats};

use crate::broker::Broker;
use crate::log::{Codec, Entry, Stored};
use crate::node::SimTransport;
use crate::rng::SplitMix64;
use crate::world::{self, Options, Verdict, Violation, Workload};

/// The input topic.
pub const IN: &str = "tally-in";
/// The output topic.
pub const OUT: &str = "tally-out";
/// The dead-letter topic.
pub const DLQ: &str = "tally-dlq";
/// The stage's state: one fact per input handled.
pub const CHANGELOG: &str = "tally-changelog";
/// The stage's consumer group.
pub const GROUP: &str = "tally";
/// The board service: a view of the outputs, outside any group.
pub const BOARD: &str = "board";
const PARTITIONS: i32 = 4;
const KEYS: u64 = 12;

/// The stage: one output per input, durable before the input is done.
pub struct Tally<T: Transport> {
    pub transport: T,
    /// The inputs handled, per key: the count's state.
    pub log: Changelog<T, Seen>,
    /// Each input takes up to this long to handle (how long, the input's offset says), so inputs
    /// of different keys finish out of order.
    pub work_ms: u64,
}

/// The input's sequence number, when `rec` is an input.
pub fn parse(rec: &Record) -> Result<u64, Malformed> {
    let text = std::str::from_utf8(rec.payload()).map_err(|_| Malformed("not UTF-8".into()))?;
    let seq = text
        .strip_prefix("seq=")
        .ok_or_else(|| Malformed("not seq=<n>".into()))?;
    let ok_key = rec.key_str().is_some_and(|k| k.starts_with('k'));
    match seq.parse() {
        Ok(n) if ok_key => Ok(n),
        _ => Err(Malformed(format!("not an input: {text:.40}"))),
    }
}

impl<T: Transport> Handler for Tally<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let seq = parse(rec)?;
        let spread = (rec.offset as u64).wrapping_mul(2_654_435_761) ^ rec.partition as u64;
        tokio::time::sleep(Duration::from_millis(spread % (self.work_ms + 1))).await;
        let name = rec.key_str().unwrap_or_default();
        if self.log.store().count(name, seq).is_none() {
            self.log.write(rec.partition, name, seq).await?;
        }
        let count = self.log.store().count(name, seq).ok_or_else(|| {
            // Folded past it and not there: the changelog is another log than the one restored.
            self.log.let_go(rec.partition);
            HandleError::retriable("the input's fact was read back and is not there")
        })?;
        let key = rec.key.clone().unwrap_or_default();
        let value = format!("seq={seq} count={count}");
        self.transport
            .produce(OutRecord::new(OUT, key, value.into_bytes()))
            .await?;
        Ok(())
    }

    const GATED: bool = true;

    /// A partition's state is restored before its first record is handled.
    async fn ready(&self, rec: &Record) -> Result<(), HandleError> {
        self.log.ready(rec.partition).await
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        self.log.assigned(partitions);
    }
}

/// The stage's store, in memory: per key, the inputs handled, by their sequence numbers (an
/// input's identity on every log of the input topic: a topic made again starts its offsets over).
#[derive(Default)]
pub struct Seen {
    inputs: std::sync::Mutex<BTreeMap<String, BTreeSet<u64>>>,
    /// Which log each changelog topic is, as last noted.
    logs: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Seen {
    /// The count of input `seq` of `key`: how many of the key's inputs up to it were handled;
    /// `None` when it was not.
    pub fn count(&self, key: &str, seq: u64) -> Option<usize> {
        let inputs = self.inputs.lock().expect("store");
        let seen = inputs.get(key)?;
        seen.contains(&seq).then(|| seen.range(..=seq).count())
    }
}

/// The store never fails.
#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

impl FactStore for Seen {
    type Fact = u64;
    type Error = Never;

    fn encode(seq: &u64) -> Vec<u8> {
        format!("seq={seq}").into_bytes()
    }

    fn decode(rec: &Record) -> Result<(String, u64), String> {
        let key = rec.key_str().ok_or("no UTF-8 key")?.to_owned();
        let text = std::str::from_utf8(rec.payload()).map_err(|e| e.to_string())?;
        let seq = text.strip_prefix("seq=").ok_or("not seq=<n>")?;
        Ok((key, seq.parse().map_err(|_| "not a number")?))
    }

    fn apply(&self, facts: &[(String, i64, u64)]) -> Result<(), Never> {
        let mut inputs = self.inputs.lock().expect("store");
        for (key, _, seq) in facts {
            inputs.entry(key.clone()).or_default().insert(*seq);
        }
        Ok(())
    }

    fn follow_log(&self, topic: &str, identity: &str) -> Result<bool, Never> {
        let mut logs = self.logs.lock().expect("store");
        let before = logs.insert(topic.to_owned(), identity.to_owned());
        let other = before.is_some_and(|b| b != identity);
        if other {
            self.inputs.lock().expect("store").clear();
        }
        Ok(other)
    }

    fn is_busy(_: &Never) -> bool {
        false
    }
}

/// The board: a view of `tally-out` kept by the framework's follower outside any group, in a
/// SQLite file of its instance's data directory (`framework::store`): per key, the inputs whose
/// outputs it has read.
pub struct Board {
    db: Db,
    path: PathBuf,
}

const BOARD_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seen (key TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (key, seq));
CREATE TABLE IF NOT EXISTS followed (topic TEXT NOT NULL, p INTEGER NOT NULL, next INTEGER NOT NULL,
                                     PRIMARY KEY (topic, p));
CREATE TABLE IF NOT EXISTS logs (topic TEXT PRIMARY KEY, id TEXT NOT NULL);
";

impl Board {
    /// Opens (or makes) the board's file at `path`.
    pub fn open(path: &Path) -> Result<Board, StoreError> {
        Ok(Board {
            db: Db::open(path, false, BOARD_SCHEMA)?,
            path: path.to_owned(),
        })
    }

    /// Per key, how many distinct inputs it has read outputs of, and which logs those were.
    pub fn counts(&self) -> Result<Shown, StoreError> {
        let counts = self.db.with(|c| {
            let mut q = c.prepare("SELECT key, COUNT(*) FROM seen GROUP BY key")?;
            let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize)))?;
            rows.collect::<Result<BTreeMap<_, _>, _>>()
        })?;
        Ok((framework::follow::LogView::logs(self)?, counts))
    }

    /// Whether it has read every partition of `topic` up to `ends`.
    pub fn reached(&self, topic: &str, ends: &[i64]) -> bool {
        let Ok(read) = framework::follow::LogView::followed(self) else {
            return false;
        };
        let at = |p: usize| {
            read.iter()
                .find(|(t, rp, _)| t == topic && *rp == p as i32)
                .map_or(0, |(_, _, n)| *n)
        };
        ends.iter().enumerate().all(|(p, end)| at(p) >= *end)
    }
}

impl framework::follow::LogView for Board {
    type Context = ();
    type Update = (String, u64);
    type Error = StoreError;

    /// An output's key and the input it names.
    fn update(_: &(), rec: &Record, _: Option<i32>) -> Option<(String, u64)> {
        let text = std::str::from_utf8(rec.payload()).ok()?;
        let seq = text.strip_prefix("seq=")?.split_once(' ')?.0;
        Some((rec.key_str()?.to_owned(), seq.parse().ok()?))
    }

    fn followed(&self) -> Result<Vec<(String, i32, i64)>, StoreError> {
        self.db.with(|c| {
            let mut q = c.prepare("SELECT topic, p, next FROM followed")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }

    fn apply_at(
        &self,
        _: &(),
        updates: &[(String, u64)],
        read_to: &[(String, i32, i64)],
    ) -> Result<(), StoreError> {
        self.db.with(|c| {
            let tx = c.transaction()?;
            for (key, seq) in updates {
                tx.execute(
                    "INSERT OR IGNORE INTO seen VALUES (?1, ?2)",
                    params![key, *seq as i64],
                )?;
            }
            for (t, p, n) in read_to {
                tx.execute(
                    "INSERT INTO followed VALUES (?1, ?2, ?3)
                     ON CONFLICT (topic, p) DO UPDATE SET next = MAX(next, excluded.next)",
                    params![t, p, n],
                )?;
            }
            tx.commit()
        })
    }

    fn scratch(&self, fresh: bool) -> Result<Board, StoreError> {
        let path = self.path.with_extension("rebuild.db");
        if fresh {
            remove_db_files(&path);
        }
        Board::open(&path)
    }

    fn logs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.db.with(|c| {
            let mut q = c.prepare("SELECT topic, id FROM logs")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn set_logs(&self, logs: &[(String, String)]) -> Result<(), StoreError> {
        self.db.with(|c| {
            let tx = c.transaction()?;
            for (t, id) in logs {
                tx.execute("INSERT OR REPLACE INTO logs VALUES (?1, ?2)", params![t, id])?;
            }
            tx.commit()
        })
    }

    /// Every row of `scratch` in place of this board's, in one transaction.
    fn take_from(&self, scratch: Board) -> Result<(), StoreError> {
        let path = scratch.path.clone();
        drop(scratch);
        self.db
            .replace_tables_from(&path, &["seen", "followed", "logs"])?;
        remove_db_files(&path);
        Ok(())
    }
}

/// The boards running now, by instance (the oracle reads them: one process runs every node),
/// the most each was seen to count, and what was seen to move back.
#[derive(Clone, Default)]
pub struct Boards {
    running: Arc<std::sync::Mutex<BTreeMap<String, Arc<Board>>>>,
    highest: Arc<std::sync::Mutex<BTreeMap<String, Shown>>>,
    went_back: Arc<std::sync::Mutex<Vec<String>>>,
}

/// The logs a board read, and what it counts per key on them (the most it was seen to count,
/// in [`Boards`]).
pub type Shown = (Vec<(String, String)>, BTreeMap<String, usize>);

impl std::fmt::Debug for Boards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Boards")
    }
}

/// How often the watch reads the boards.
const BOARD_WATCH: Duration = Duration::from_millis(500);

impl Boards {
    fn running(&self) -> Vec<(String, Arc<Board>)> {
        let running = self.running.lock().expect("boards");
        running.iter().map(|(n, b)| (n.clone(), b.clone())).collect()
    }

    /// `board-moves-forward`: reads `board` (instance `name`'s), and notes a key it counts less
    /// of than it was seen to before on the same logs (a board that lost its disk, or folded a
    /// topic made again, starts a new history). Read as each board opens its file and every
    /// [`BOARD_WATCH`]: what a board showed must survive its crash and its power loss.
    fn note(&self, name: &str, board: &Board) {
        let Ok((mut logs, counts)) = board.counts() else {
            return;
        };
        logs.sort();
        let mut highest = self.highest.lock().expect("boards");
        let (known, high) = highest.entry(name.to_owned()).or_default();
        if *known != logs {
            *known = logs;
            high.clear();
        }
        for (key, n) in counts {
            let was = high.entry(key.clone()).or_default();
            if n < *was {
                let t = framework::clock::now_ms();
                self.went_back
                    .lock()
                    .expect("boards")
                    .push(format!("{name} at {t}: {key} counted {n} after {was}"));
            }
            *was = (*was).max(n);
        }
    }

    /// Reads every board every [`BOARD_WATCH`] for `lasting` ([`Boards::note`]).
    async fn watch(self, lasting: Duration) {
        let until = tokio::time::Instant::now() + lasting;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(BOARD_WATCH).await;
            for (name, board) in self.running() {
                self.note(&name, &board);
            }
        }
    }
}

/// The testing application as one seed draws it.
#[derive(Clone, Debug)]
pub struct TallyApp {
    /// The board service's views, as they run.
    pub boards: Boards,
    pub inputs: u64,
    /// Milliseconds between inputs.
    pub gap_ms: u64,
    pub instances: usize,
    pub concurrency: usize,
    /// What [`Tally::work_ms`] is.
    pub work_ms: u64,
    /// Per input, the chance of a hostile record beside it.
    pub hostile: f64,
    /// [`WorkerConfig::gate_bound`]: often small, so that partitions waiting for their
    /// changelog are paused, and lost and handed back while paused.
    pub gate_bound: usize,
}

impl TallyApp {
    /// The seed's draw.
    pub fn draw(seed: u64) -> TallyApp {
        let mut rng = SplitMix64::new(seed ^ 0x7a11_7a11);
        TallyApp {
            boards: Boards::default(),
            inputs: rng.between(150, 400),
            gap_ms: rng.between(150, 300),
            instances: 1 + rng.below(2) as usize,
            // Often fewer lanes than one partition's keys: a partition that waits with its
            // records in the lanes would hold the others up.
            concurrency: {
                let most = if rng.chance(0.5) { 3 } else { 16 };
                1 + rng.below(most) as usize
            },
            // Mostly quick; sometimes slower than the inputs come (a backlog builds).
            work_ms: if rng.chance(0.3) {
                rng.between(500, 2_000)
            } else {
                rng.below(300)
            },
            hostile: 0.02 + rng.unit() * 0.08,
            gate_bound: if rng.chance(0.5) {
                1 + rng.below(2) as usize
            } else {
                framework::worker::GATE_BOUND
            },
        }
    }
}

impl Application for TallyApp {
    fn topics(&self) -> Vec<String> {
        [IN, OUT, DLQ, CHANGELOG].map(String::from).to_vec()
    }

    fn services(&self) -> Vec<String> {
        vec![GROUP.into(), BOARD.into()]
    }

    async fn run<T: Transport>(
        &self,
        service: &str,
        transport: T,
        instance: Instance,
        mut shutdown: Shutdown,
    ) -> Result<(), Stopped> {
        if service == BOARD {
            let board = Board::open(&instance.data_dir.join("board.db")).map_err(Stopped::fatal)?;
            self.boards.note(&instance.name, &board);
            let board = Arc::new(board);
            self.boards
                .running
                .lock()
                .expect("boards")
                .insert(instance.name, board.clone());
            let _follower =
                framework::follow::ViewFollower::start(transport, vec![OUT.into()], Arc::new(()), board);
            shutdown.wait().await;
            return Ok(());
        }
        let mut cfg = WorkerConfig::new("tally", GROUP, &[IN], DLQ);
        cfg.concurrency = self.concurrency;
        cfg.gate_bound = self.gate_bound;
        let log = Changelog::start(transport.clone(), CHANGELOG, Arc::new(Seen::default()), false);
        let handler = Arc::new(Tally {
            transport: transport.clone(),
            log,
            work_ms: self.work_ms,
        });
        let stats = Arc::new(WorkerStats::default());
        Ok(run_worker(transport, cfg, handler, stats, shutdown).await?)
    }
}

impl Workload for TallyApp {
    fn instances(&self, service: &str) -> usize {
        if service == BOARD {
            1
        } else {
            self.instances
        }
    }

    /// The inputs, and the watch over the boards (for as long as the run can last).
    async fn feed(&self, rng: SplitMix64, t: SimTransport) {
        let lasting = Duration::from_millis(self.inputs * self.gap_ms) + Duration::from_secs(600);
        tokio::spawn(self.boards.clone().watch(lasting));
        feed(self.clone(), rng, t).await;
    }

    fn groups(&self) -> Vec<(String, Vec<String>)> {
        vec![(GROUP.into(), vec![IN.into()])]
    }

    fn dead_letter_topics(&self) -> Vec<String> {
        vec![DLQ.into()]
    }

    /// Both topics. The oracle counts outputs on every log of the output topic, and the boards
    /// must fold its new log from the start. It knows an input by its key and sequence number on
    /// every log of the input topic, and excuses one that went with a former log unhandled; one
    /// written to the new log is owed its effect, also when a member cut off from the broker's
    /// answers while the topic was made again committed its old log's mark on the new log by name
    /// before it was killed (seed 222): the commit says which log it is of, and the partition's
    /// next owner reads the new log from its start.
    fn recreatable(&self) -> Vec<String> {
        vec![IN.into(), OUT.into()]
    }

    /// The time its inputs take one after another on the lanes the stage can run at once.
    fn settle(&self) -> Duration {
        let lanes = self.concurrency.min(KEYS as usize) as u64;
        Duration::from_millis(self.inputs * self.work_ms / lanes)
    }

    fn check(&self, b: &Broker, hits: &Hits) -> Vec<Violation> {
        let mut found = check(b, hits);
        found.extend(check_boards(b, &self.boards));
        found
    }

    /// Every board has read `tally-out`'s log as it is now (made again, the new one) to its end.
    fn caught_up(&self, b: &Broker) -> bool {
        let ends = b.end_offsets(OUT).unwrap_or_default();
        let log = b.log_id(OUT).map(|id| (OUT.to_owned(), id));
        let boards = self.boards.running();
        boards.iter().all(|(_, board)| {
            let logs = framework::follow::LogView::logs(board.as_ref());
            let on_it = logs.is_ok_and(|logs| log.as_ref().is_none_or(|l| logs.contains(l)));
            on_it && board.reached(OUT, &ends)
        })
    }

    /// 10 s, when the stage handles inputs at least twice as fast as they come (its lanes each
    /// take `work_ms` at most per input); else none.
    fn isolation(&self) -> Option<Duration> {
        let lanes = self.concurrency.min(KEYS as usize) as u64;
        (lanes * self.gap_ms >= 2 * self.work_ms).then_some(Duration::from_secs(10))
    }
}

/// Runs one seed of the testing application with `mutant` (a framework mutant's name) on.
pub fn run(seed: u64, mutant: Option<&'static str>) -> Verdict {
    let opts = Options {
        mutant,
        partitions: PARTITIONS,
        ..Options::seed(seed)
    };
    world::run(Arc::new(TallyApp::draw(seed)), &opts)
}

/// The feeder: the inputs at the app's pace, and hostile records among them. Each write is
/// asked again until the broker answers (what reached the log is what the oracle reads).
async fn feed(app: TallyApp, mut rng: SplitMix64, t: SimTransport) {
    let mut seqs = BTreeMap::<u64, u64>::new();
    let mut writes = Vec::new();
    for _ in 0..app.inputs {
        tokio::time::sleep(Duration::from_millis(app.gap_ms)).await;
        let k = rng.below(KEYS);
        let seq = seqs.entry(k).or_default();
        *seq += 1;
        let rec = OutRecord::new(IN, format!("k{k}"), format!("seq={seq}").into_bytes());
        // One key's inputs go out one after another, as one producer's records of a key do.
        produce_until_written(&t, rec).await;
        if rng.chance(app.hostile) {
            let hostile = hostile(&mut rng);
            let tt = t.clone();
            writes.push(tokio::spawn(async move { write_hostile(&tt, hostile).await }));
        }
    }
    for w in writes {
        let _ = w.await;
    }
}

/// A record the stage must not take as an input.
enum Hostile {
    Raw(RawRecord),
    Undecodable(i32),
    /// A bare commit marker (what a transactional producer leaves), on this topic's partition.
    Marker(&'static str, i32),
}

fn hostile(rng: &mut SplitMix64) -> Hostile {
    let key = Some(format!("k{}", rng.below(KEYS)).into_bytes());
    let raw = |payload: Vec<u8>, headers| {
        Hostile::Raw(RawRecord {
            topic: IN.into(),
            partition: None,
            key: key.clone(),
            payload: Some(payload),
            headers,
        })
    };
    match rng.below(5) {
        0 => raw(b"{\"not\": \"an input\"}".to_vec(), Vec::new()),
        1 => raw(vec![b'x'; 200 + rng.below(300) as usize], Vec::new()),
        2 => raw(
            b"seq=oops".to_vec(),
            vec![(vec![0xff, 0xfe, b'k'], Some(b"v".to_vec()))],
        ),
        3 => Hostile::Undecodable(rng.below(PARTITIONS as u64) as i32),
        _ => Hostile::Marker(
            if rng.chance(0.5) { IN } else { CHANGELOG },
            rng.below(PARTITIONS as u64) as i32,
        ),
    }
}

/// Writes `rec`, asked again until the broker takes it: the feeder is not under test.
async fn produce_until_written(t: &SimTransport, rec: OutRecord) {
    for _ in 0..600 {
        if t.produce(rec.clone()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes a hostile record, asked again until the broker takes it.
async fn write_hostile(t: &SimTransport, h: Hostile) {
    match h {
        Hostile::Raw(raw) => {
            for _ in 0..600 {
                if t.produce_raw(raw.clone()).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Hostile::Undecodable(partition) => {
            let rec = Stored {
                key: Some(b"k0".to_vec()),
                payload: Some(b"seq=0".to_vec()),
                headers: Vec::new(),
                timestamp_ms: 0,
            };
            let kind = (Codec::ALL[1], false, false);
            t.append_batch(IN, partition, vec![Entry::Record(rec)], kind)
                .await;
        }
        Hostile::Marker(topic, partition) => {
            let marker = vec![Entry::Marker { commit: true }];
            t.append_batch(topic, partition, marker, (Codec::None, true, false))
                .await;
        }
    }
}

/// The oracle: reads the logs and judges.
fn check(b: &Broker, hits: &Hits) -> Vec<Violation> {
    let mut found = Vec::new();
    let (inputs, malformed) = read_inputs(b);
    // An output counts on whichever log of the output topic it was written to.
    let outputs = read_outputs(b, true);
    check_outputs(&inputs, &outputs, &mut found);
    let notes = dead_letter_notes(b);
    // A record passed over without a note is excused only where the broker refused even its bare
    // note (the service's word alone is not enough).
    let dropped: BTreeSet<(i32, i64)> = hits
        .dropped
        .iter()
        .filter(|d| d.1 == IN && b.refused_notes.contains(*d))
        .map(|d| (d.2, d.3))
        .collect();
    for at in &malformed {
        if !notes.contains(at) && !dropped.contains(at) {
            let what = format!("{IN}/{}@{} has no dead-letter note", at.0, at.1);
            found.push(Violation::new("malformed-dead-lettered", what));
        }
    }
    found
}

/// An input on a log of the input topic: its identity (key and sequence number: offsets start
/// over on a topic made again), where it is, and whether that is the log now (an input of a
/// former log may have gone with it unhandled).
struct Input {
    key: Vec<u8>,
    seq: u64,
    now: bool,
}

/// The inputs on every log of the input topic, and the offsets of what is no input on the log now
/// (undecodable batches are given up on, not dead-lettered, so they are neither).
fn read_inputs(b: &Broker) -> (Vec<Input>, Vec<(i32, i64)>) {
    let (mut inputs, mut malformed) = (Vec::new(), Vec::new());
    let lives = b.lives(IN);
    for (life, parts) in lives.iter().enumerate() {
        let now = life + 1 == lives.len();
        for (p, part) in parts.iter().enumerate() {
            for (o, r) in part {
                let rec = Record {
                    topic: IN.into(),
                    partition: p as i32,
                    offset: *o,
                    key: r.key.clone(),
                    payload: r.payload.clone(),
                    headers: Vec::new(),
                    timestamp_ms: None,
                };
                match parse(&rec) {
                    Ok(seq) => inputs.push(Input {
                        key: r.key().to_vec(),
                        seq,
                        now,
                    }),
                    Err(_) if now => malformed.push((p as i32, *o)),
                    Err(_) => {}
                }
            }
        }
    }
    (inputs, malformed)
}

/// An output on the log: its key, the input it names and the count it gives (when it says), and
/// its value.
struct Output {
    key: Vec<u8>,
    seq: Option<u64>,
    count: Option<usize>,
    value: String,
}

/// The outputs on the log now (`every_life`: and on every log the output topic had before it
/// was made again, oldest first).
fn read_outputs(b: &Broker, every_life: bool) -> Vec<Output> {
    let records: Vec<&Stored> = if every_life {
        b.ever_written(OUT).collect()
    } else {
        b.log(OUT).into_iter().flatten().map(|(_, r)| r).collect()
    };
    records
        .into_iter()
        .map(|r| {
            let value = String::from_utf8_lossy(r.payload()).into_owned();
            let (seq, count) = value
                .strip_prefix("seq=")
                .and_then(|v| v.split_once(" count="))
                .map_or((None, None), |(s, c)| (s.parse().ok(), c.parse().ok()));
            Output {
                key: r.key().to_vec(),
                seq,
                count,
                value,
            }
        })
        .collect()
}

/// An input's identity: its key and sequence number.
type Id<'a> = (&'a [u8], u64);

/// At least once, one effect, per-key order.
fn check_outputs(inputs: &[Input], outputs: &[Output], found: &mut Vec<Violation>) {
    // Every input the logs held, and whether the log now holds it.
    let mut known: BTreeMap<Id<'_>, bool> = BTreeMap::new();
    for i in inputs {
        *known.entry((i.key.as_slice(), i.seq)).or_default() |= i.now;
    }
    // Where each input's first output is.
    let mut first_at: BTreeMap<Id<'_>, usize> = BTreeMap::new();
    for (i, o) in outputs.iter().enumerate() {
        if let Some(seq) = o.seq {
            first_at.entry((o.key.as_slice(), seq)).or_insert(i);
        }
    }
    // Each input's first output; per key, the last input whose output first appeared.
    let mut first: BTreeMap<Id<'_>, &Output> = BTreeMap::new();
    let mut last: BTreeMap<&[u8], u64> = BTreeMap::new();
    for o in outputs {
        let id = o.seq.map(|seq| (o.key.as_slice(), seq));
        let Some(id) = id.filter(|id| known.contains_key(id)) else {
            let what = format!("output `{}` names no input on the log", o.value);
            found.push(Violation::new("one-effect", what));
            continue;
        };
        if let Some(f) = first.get(&id) {
            if f.value != o.value && !counted_late(&known, &first_at, id, (f, o)) {
                let what = format!("output `{}` of an input first output as `{}`", o.value, f.value);
                found.push(Violation::new("one-effect", what));
            }
            continue;
        }
        first.insert(id, o);
        // A key with inputs on more than one log of the input topic has no order across them
        // (see `counted_late`).
        if let Some(prev) = last
            .insert(id.0, id.1.max(last.get(id.0).copied().unwrap_or(0)))
            .filter(|p| *p > id.1 && !across_logs(&known, id.0))
        {
            let key = String::from_utf8_lossy(id.0);
            let what = format!("{key}: output of seq={} after that of seq={prev}", id.1);
            found.push(Violation::new("per-key-order", what));
        }
    }
    check_counts(&known, (&first, &first_at), found);
    for ((key, seq), _) in known.iter().filter(|(id, now)| **now && !first.contains_key(*id)) {
        let key = String::from_utf8_lossy(key);
        found.push(Violation::new(
            "no-input-lost",
            format!("{IN}: {key} seq={seq} has no output"),
        ));
    }
}

/// Whether `key` has inputs on more than one log of the input topic. Its inputs then have no
/// order across the logs: an input of a log made again since may be handled late, by a member cut
/// off from the broker when the topic was made again (an expelled member finishing what it held:
/// seed 1233), and no owner of the new log has it to handle in its place and in order; and a
/// member that does not know yet that its topic was made again reads the new log on from its old
/// position, and reads it again from its start once it notices (seed 2257: within the worker's
/// log check, 10 s, of hearing from the broker again), so an input of the new log before that
/// position is handled after later ones (librdkafka does not notice a topic made again by
/// itself: librdkafka#4898).
fn across_logs(known: &BTreeMap<Id<'_>, bool>, key: &[u8]) -> bool {
    known.range((key, 0)..=(key, u64::MAX)).any(|(_, now)| !now)
}

/// Whether a later copy of input `id`'s output counts more than its first copy only by inputs
/// of its key before it handled after that first copy or with no output, the key having inputs
/// on more than one log ([`across_logs`]).
fn counted_late(
    known: &BTreeMap<Id<'_>, bool>,
    first_at: &BTreeMap<Id<'_>, usize>,
    (key, seq): Id<'_>,
    (first, later): (&Output, &Output),
) -> bool {
    let (Some(was), Some(now)) = (first.count, later.count) else {
        return false;
    };
    if !across_logs(known, key) {
        return false;
    }
    let at = first_at.get(&(key, seq)).copied().unwrap_or(usize::MAX);
    let late = known
        .range((key, 0)..(key, seq))
        .filter(|(id, _)| first_at.get(*id).is_none_or(|i| *i > at))
        .count();
    now > was && now - was <= late
}

/// An input's count is how many of its key's inputs up to it were handled, as its outputs show.
/// An input of a former log with no output may have been handled all the same (stopped between
/// its fact and its output, with the log it would have come again from gone), and, of a key with
/// inputs on more than one log, one whose output came after this input's may have been handled
/// after it ([`across_logs`]): the count may be up to that many more.
fn check_counts(
    known: &BTreeMap<Id<'_>, bool>,
    (first, first_at): (&BTreeMap<Id<'_>, &Output>, &BTreeMap<Id<'_>, usize>),
    found: &mut Vec<Violation>,
) {
    for (&(key, seq), o) in first {
        let at = first_at.get(&(key, seq)).copied().unwrap_or(usize::MAX);
        let across = across_logs(known, key);
        let unsure_of = |id: &Id<'_>| across && first_at.get(id).is_none_or(|i| *i > at);
        let least = first
            .range((key, 0)..=(key, seq))
            .filter(|(id, _)| id.1 == seq || !unsure_of(id))
            .count();
        let unsure = known
            .range((key, 0)..(key, seq))
            .filter(|(id, _)| unsure_of(id))
            .count();
        if o.count.is_none_or(|c| c < least || c > least + unsure) {
            let what = format!(
                "output `{}`: the oracle counts {least} (up to {} more)",
                o.value, unsure
            );
            found.push(Violation::new("one-effect", what));
        }
    }
}

/// The input offsets the dead-letter topic has a note of.
fn dead_letter_notes(b: &Broker) -> BTreeSet<(i32, i64)> {
    let mut notes = BTreeSet::new();
    for part in b.log(DLQ) {
        for (_, r) in part {
            let at = (|| {
                if r.header("dlq.source.topic")? != IN {
                    return None;
                }
                let p = r.header("dlq.source.partition")?.parse().ok()?;
                let o = r.header("dlq.source.offset")?.parse().ok()?;
                Some((p, o))
            })();
            notes.extend(at);
        }
    }
    notes
}

/// `view-follows-log`: every board's count of inputs per key equals the count of inputs of that
/// key with an output on the log (the view folded the whole log, whatever it lost on the way).
fn check_boards(b: &Broker, boards: &Boards) -> Vec<Violation> {
    let mut expected: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    // The board follows the output topic's log now: made again, it folds the new log alone.
    for o in read_outputs(b, false) {
        expected
            .entry(String::from_utf8_lossy(&o.key).into_owned())
            .or_default()
            .extend(o.seq);
    }
    let expected: BTreeMap<String, usize> = expected.into_iter().map(|(k, s)| (k, s.len())).collect();
    let mut found: Vec<Violation> = boards
        .went_back
        .lock()
        .expect("boards")
        .iter()
        .take(5)
        .map(|what| Violation::new("board-moves-forward", what.clone()))
        .collect();
    for (name, board) in boards.running() {
        let counts = match board.counts() {
            Ok((_, counts)) => counts,
            Err(e) => {
                let what = format!("{name} unreadable: {}", framework::error::Report(&e));
                found.push(Violation::new("view-follows-log", what));
                continue;
            }
        };
        if counts != expected {
            let keys: BTreeSet<&String> = expected.keys().chain(counts.keys()).collect();
            let wrong: Vec<_> = keys
                .into_iter()
                .map(|k| {
                    (
                        k,
                        counts.get(k).copied().unwrap_or(0),
                        expected.get(k).copied().unwrap_or(0),
                    )
                })
                .filter(|(_, shown, due)| shown != due)
                .map(|(k, shown, due)| format!("{k}: {shown} of {due}"))
                .take(5)
                .collect();
            found.push(Violation::new(
                "view-follows-log",
                format!("{name} shows {wrong:?}"),
            ));
        }
    }
    found
}
