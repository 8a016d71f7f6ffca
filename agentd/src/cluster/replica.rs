//! The replicated table: what the cluster agrees on, and the merge rule that makes it agree.
//!
//! Pure: no I/O, no clock (the wall time is passed in), no sockets. Every node holds a
//! [`Replica`]; a command taken from the FIFO becomes stamped [`Entry`]s that are applied here and
//! sent to the group; entries from peers are merged. **Merging is a join**: every field is a
//! last-writer-wins register ([`Reg`]) ordered by [`Stamp`] `(time, node)` (then by value, so even
//! equal stamps resolve the same way everywhere), so merging is commutative, associative and
//! idempotent — every node that has seen the same entries holds the same state, whatever the
//! order, loss (repaired later) or duplication.
//!
//! - Stamps come from a hybrid logical clock: `time` is `max(wall clock, last + 1, any time
//!   seen)`, counted in [`TICKS_PER_MS`]ths of a millisecond, so it is a Lamport clock that also
//!   tells roughly when a change was made, and that a flood of commands (a thousand a
//!   millisecond) does not run ahead of the wall clock.
//! - A service is visible when its `created` stamp (add/policy) is newer than its `deleted` stamp
//!   (`del SERVICE`), or when it has a live backend; a backend is live when its `exists` register
//!   says yes with a stamp newer than the service's `deleted`.
//! - **Deletions are tombstones**: `del` writes `exists = false` (or `deleted = t`), it never
//!   removes the entry, so an older `add` arriving late loses to it. Tombstones whose newest stamp
//!   is older than [`TOMBSTONE_MS`] are collected ([`Replica::collect`]), and an incoming dead entry
//!   already that old is not taken in, so every node forgets the same tombstones.
//! - Config lines are applied with the config file's modification time as their stamp time: a
//!   change made through the FIFO after the file was written wins over it on every restart, and an
//!   edited config wins over older changes.
//! - Usage counters (and `reset`) are not part of the replica: they stay local.
//!
//! [`Replica::digest`] summarises the state in [`BUCKETS`] order-independent hashes; nodes
//! compare digests and send each other the entries of the buckets that differ.

use std::net::IpAddr;
use std::sync::Arc;

use lbfo_core::cmd::Attr;
use lbfo_core::table::{ApplyError, Backend, DEFAULT_PRIO, DEFAULT_WEIGHT};
use lbfo_core::{Capacity, Command, Name, Policy, Service};

use crate::vecmap::VecMap;

/// A node's id: the FNV-1a hash of its name (names must be unique in a cluster).
pub type NodeId = u64;

/// How long a tombstone is kept: 10 minutes. Far longer than any datagram lives (the freshness
/// window is 30 s) and than anti-entropy needs to reach a node that is up; a node cut off for
/// longer than this may bring back a backend deleted meanwhile (see ARCHITECTURE.md).
pub const TOMBSTONE_MS: u64 = 10 * 60 * 1000;

/// How far ahead of this node's wall clock a stamp made elsewhere may be. The clocks of a
/// cluster must agree within it (NTP): an entry stamped later is refused ([`Refused::Future`]),
/// so a wrong clock, a damaged state file or a key holder cannot pin a register with a stamp
/// nobody can beat (`u64::MAX`), nor drag every node's hybrid clock ahead.
pub const AHEAD_MS: u64 = 30_000;

/// A stamp's time is counted in these fractions of a millisecond: each stamp a node makes is
/// later than its last, and in whole milliseconds a burst of 50,000 FIFO commands ran its clock
/// 50 s ahead of the wall clock, where its peers refused them ([`AHEAD_MS`]).
pub const TICKS_PER_MS: u64 = 1024;

/// Milliseconds as stamp time (saturating).
pub fn ticks(ms: u64) -> u64 {
    ms.saturating_mul(TICKS_PER_MS)
}

/// Buckets in a digest: a hash for each of 32 slices of the services localises a difference to
/// one slice, so repairing one missed change resends little, and the digest stays small.
pub const BUCKETS: usize = 32;

/// When a change was made, and by whom; ordered by time, then node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Stamp {
    /// Hybrid logical time, in [`TICKS_PER_MS`]ths of a millisecond since the epoch.
    pub time: u64,
    /// The node that made the change.
    pub node: NodeId,
}

/// Ordered by time, then node. One out-of-line comparison: registers, merges and prunes compare
/// stamps everywhere, and inlined 64-bit comparisons are long on 32-bit routers.
impl Ord for Stamp {
    #[inline(never)]
    fn cmp(&self, o: &Stamp) -> std::cmp::Ordering {
        (self.time, self.node).cmp(&(o.time, o.node))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, o: &Stamp) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Stamp {
    /// Older than every real change: the default of registers nobody wrote.
    pub const ZERO: Stamp = Stamp { time: 0, node: 0 };
}

/// A last-writer-wins register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg<T> {
    /// The value.
    pub value: T,
    /// When it was written.
    pub at: Stamp,
}

impl<T: Copy + Ord> Reg<T> {
    const fn new(value: T) -> Reg<T> {
        Reg {
            value,
            at: Stamp::ZERO,
        }
    }

    /// Takes `o` if it is newer (equal stamps: the larger value); says whether it did.
    pub fn merge(&mut self, o: Reg<T>) -> bool {
        if (o.at, o.value) > (self.at, self.value) {
            *self = o;
            true
        } else {
            false
        }
    }

    fn set(&mut self, value: T, at: Stamp) -> bool {
        self.merge(Reg { value, at })
    }
}

/// A backend's replicated fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendState {
    /// Added (true) or deleted (false).
    pub exists: Reg<bool>,
    /// In rotation.
    pub up: Reg<bool>,
    /// Weight.
    pub weight: Reg<u32>,
    /// Priority.
    pub prio: Reg<u32>,
    /// Usage limit.
    pub limit: Reg<u64>,
}

impl BackendState {
    const NEW: BackendState = BackendState {
        exists: Reg::new(false),
        up: Reg::new(true),
        weight: Reg::new(DEFAULT_WEIGHT),
        prio: Reg::new(DEFAULT_PRIO),
        limit: Reg::new(0),
    };

    fn newest(&self) -> Stamp {
        [
            self.exists.at,
            self.up.at,
            self.weight.at,
            self.prio.at,
            self.limit.at,
        ]
        .into_iter()
        .max()
        .unwrap_or(Stamp::ZERO)
    }

    fn merge(&mut self, o: &BackendState) -> bool {
        // Non-short-circuiting: every field merges.
        self.exists.merge(o.exists)
            | self.up.merge(o.up)
            | self.weight.merge(o.weight)
            | self.prio.merge(o.prio)
            | self.limit.merge(o.limit)
    }
}

/// A service's replicated fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The name.
    pub name: Name,
    /// Newest add/policy.
    pub created: Stamp,
    /// Newest `del SERVICE`.
    pub deleted: Stamp,
    /// Policy code (see [`Policy::code`]).
    pub policy: Reg<u8>,
    /// Backends by address.
    pub backends: VecMap<IpAddr, BackendState>,
}

impl ServiceState {
    fn new(name: Name) -> ServiceState {
        ServiceState {
            name,
            created: Stamp::ZERO,
            deleted: Stamp::ZERO,
            policy: Reg::new(Policy::RoundRobin.code()),
            backends: VecMap::new(),
        }
    }

    fn live(&self, b: &BackendState) -> bool {
        b.exists.value && b.exists.at > self.deleted
    }

    /// Whether lookups should see the service.
    pub fn visible(&self) -> bool {
        self.created > self.deleted || self.backends.values().any(|b| self.live(b))
    }

    fn live_backend(&self, addr: IpAddr) -> Option<&BackendState> {
        self.backends.get(&addr).filter(|b| self.live(b))
    }
}

/// Why [`Replica::merge`] did not take an entry in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Stamped more than [`AHEAD_MS`] after this node's wall clock, by this much (ms).
    Future(u64),
    /// A service new to a replica that already holds this many (see [`held`]).
    Services(usize),
    /// A backend new to a service that already holds this many (see [`held`]).
    Backends(usize),
}

/// What a replica of a table of capacity `cap` holds at most, from the wire (or the state file),
/// tombstones included, so that a key holder or a buggy peer cannot grow an agent's memory
/// without bound: twice the services (a full table, and as many deleted within the tombstone
/// bound), and four times the backends per service (backends come and go more often). More is
/// refused ([`Refused::Services`], [`Refused::Backends`]) until tombstones are collected.
///
/// An agent's replica is of the largest table ([`Capacity::MAX`]), not of its own `capacity`:
/// it holds what any node's table may hold (what its own cannot is counted as
/// `capacity_refused`), so nodes of different capacities still agree on the digest.
pub fn held(cap: Capacity) -> (usize, usize) {
    (2 * cap.services(), 4 * cap.backends())
}

/// One unit of replication: a service's own fields, or one backend's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A service's fields.
    Service {
        /// The service.
        name: Name,
        /// Newest add/policy.
        created: Stamp,
        /// Newest delete.
        deleted: Stamp,
        /// Policy code.
        policy: Reg<u8>,
    },
    /// One backend's fields.
    Backend {
        /// The service.
        name: Name,
        /// The backend.
        addr: IpAddr,
        /// Its fields.
        state: BackendState,
    },
}

impl Entry {
    /// The service the entry is about.
    pub fn name(&self) -> &Name {
        match self {
            Entry::Service { name, .. } | Entry::Backend { name, .. } => name,
        }
    }

    /// The newest of its stamps.
    fn newest(&self) -> Stamp {
        match self {
            Entry::Service {
                created,
                deleted,
                policy,
                ..
            } => *created.max(deleted).max(&policy.at),
            Entry::Backend { state, .. } => state.newest(),
        }
    }
}

/// The node's copy of the cluster's table.
#[derive(Debug, Clone)]
pub struct Replica {
    me: NodeId,
    clock: u64,
    /// Shared, copied on write: the simulator gives many nodes one table, and each copies only
    /// what it changes (the agent holds one replica, so nothing is ever copied there).
    services: Arc<VecMap<String, Arc<ServiceState>>>,
    /// Per digest bucket, the sum of its entries' hashes, up to date but for the services in
    /// `dirty`. Every digest heard is compared with ours, and entries arrive a datagram at a
    /// time between two of them, so a digest brings up to date only the services changed since
    /// the last: summing a whole bucket again for each change made a node back from a
    /// partition spend most of its catching up re-hashing what it already had.
    sums: [u64; BUCKETS],
    /// The services changed since `sums` was last brought up to date, each with its share of
    /// its bucket's sum then ([`service_hash`]; 0 for a service new since).
    dirty: VecMap<String, u64>,
    cap: Capacity,
}

/// The node id for a node name.
pub fn node_id(name: &str) -> NodeId {
    fnv(0xcbf2_9ce4_8422_2325, name.as_bytes())
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The digest bucket a service belongs to. Part of the wire protocol, so it has its own fixed
/// hash (FNV-1a of the stored lower-case name), independent of the shared table's index hash.
pub fn bucket(name: &Name) -> usize {
    (fnv(0xcbf2_9ce4_8422_2325, name.as_bytes()) % BUCKETS as u64) as usize
}

impl Replica {
    /// An empty replica for node `me`, of the largest table ([`Capacity::MAX`]: see [`held`]).
    pub fn new(me: NodeId) -> Replica {
        Replica::with_capacity(me, Capacity::MAX)
    }

    /// An empty replica for node `me` of a table of capacity `cap`.
    pub fn with_capacity(me: NodeId, cap: Capacity) -> Replica {
        Replica {
            me,
            clock: 0,
            services: Arc::new(VecMap::new()),
            sums: [0; BUCKETS],
            dirty: VecMap::new(),
            cap,
        }
    }

    /// The service `name`, to change (created if new), copied first if shared; its share of its
    /// digest bucket is noted, to be taken out of the sum at the next digest.
    fn service_mut(&mut self, name: Name) -> &mut ServiceState {
        if !self.dirty.contains_key(name.as_str()) {
            let was = self
                .services
                .get(name.as_str())
                .map_or(0, |s| service_hash(s));
            self.dirty.insert(name.as_str().to_owned(), was);
        }
        let s = Arc::make_mut(&mut self.services)
            .get_or_insert_with(name.as_str().to_owned(), || {
                Arc::new(ServiceState::new(name))
            });
        Arc::make_mut(s)
    }

    /// How many entries it holds (a service's own and one per backend, tombstones included).
    pub fn len(&self) -> usize {
        self.services.values().map(|s| 1 + s.backends.len()).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// A copy of this replica held by node `me` (the simulator gives every node one table
    /// without merging it entry by entry).
    pub fn copy_for(&self, me: NodeId) -> Replica {
        Replica { me, ..self.clone() }
    }

    /// A fresh stamp, newer than everything seen (but never wrapping around).
    fn tick(&mut self, wall_ms: u64) -> Stamp {
        self.clock = ticks(wall_ms).max(self.clock.saturating_add(1));
        Stamp {
            time: self.clock,
            node: self.me,
        }
    }

    fn observe(&mut self, s: Stamp) {
        self.clock = self.clock.max(s.time);
    }

    /// Applies a command made on this node now; returns the entries to send. On error nothing
    /// changed. `reset` changes nothing here (counters are local).
    pub fn command(&mut self, cmd: &Command, wall_ms: u64) -> Result<Vec<Entry>, ApplyError> {
        self.check(cmd)?;
        let at = self.tick(wall_ms);
        Ok(self.apply_at(cmd, at))
    }

    /// Applies a config line with the config's stamp time (its file's mtime), which is taken as
    /// `wall_ms` if it is later: a file touched into the future, or a clock set back since it was
    /// written, must not stamp ahead of this clock. Never fails: a line that no longer applies
    /// (its backend deleted by a newer change) simply loses.
    pub fn config_line(&mut self, cmd: &Command, time: u64, wall_ms: u64) -> Vec<Entry> {
        let at = Stamp {
            time: ticks(time.min(wall_ms)),
            node: self.me,
        };
        self.observe(at);
        if self.check(cmd).is_err() && !matches!(cmd, Command::Add { .. } | Command::Policy { .. })
        {
            return Vec::new();
        }
        self.apply_at(cmd, at)
    }

    /// Whether `cmd` applies to the visible state (the same errors as the local table's).
    fn check(&self, cmd: &Command) -> Result<(), ApplyError> {
        let s = self
            .services
            .get(cmd.service().as_str())
            .filter(|s| s.visible());
        let backend = |addr| {
            let s = s.ok_or(ApplyError::NoService)?;
            s.live_backend(addr)
                .map(|_| ())
                .ok_or(ApplyError::NoBackend)
        };
        match *cmd {
            Command::Add { addr, .. } => match s {
                None if self.visible_count() >= self.cap.services() => {
                    Err(ApplyError::TableFull(self.cap.services()))
                }
                Some(s)
                    if s.live_backend(addr).is_none()
                        && s.backends.values().filter(|b| s.live(b)).count()
                            >= self.cap.backends() =>
                {
                    Err(ApplyError::ServiceFull(self.cap.backends()))
                }
                _ => Ok(()),
            },
            Command::Policy { .. }
                if s.is_none() && self.visible_count() >= self.cap.services() =>
            {
                Err(ApplyError::TableFull(self.cap.services()))
            }
            Command::Policy { .. } => Ok(()),
            Command::Del { addr: None, .. } | Command::Reset { .. } => {
                s.map(|_| ()).ok_or(ApplyError::NoService)
            }
            Command::Del {
                addr: Some(addr), ..
            }
            | Command::SetUp { addr, .. }
            | Command::Set { addr, .. } => backend(addr),
        }
    }

    fn visible_count(&self) -> usize {
        self.services.values().filter(|s| s.visible()).count()
    }

    /// Writes `cmd`'s fields at `at` (merging, so an older stamp loses to what is there).
    fn apply_at(&mut self, cmd: &Command, at: Stamp) -> Vec<Entry> {
        let name = *cmd.service();
        let s = self.service_mut(name);
        let mut backend_touched = None;
        match *cmd {
            Command::Add {
                addr,
                weight,
                prio,
                limit,
                ..
            } => {
                s.created = s.created.max(at);
                let was_live = s.live_backend(addr).is_some();
                let b = s.backends.get_or_insert_with(addr, || BackendState::NEW);
                b.exists.set(true, at);
                if !was_live {
                    // A new incarnation starts from the defaults.
                    b.up.set(true, at);
                    b.weight.set(weight.unwrap_or(DEFAULT_WEIGHT), at);
                    b.prio.set(prio.unwrap_or(DEFAULT_PRIO), at);
                    b.limit.set(limit.unwrap_or(0), at);
                } else {
                    weight.map(|w| b.weight.set(w, at));
                    prio.map(|p| b.prio.set(p, at));
                    limit.map(|l| b.limit.set(l, at));
                }
                backend_touched = Some(addr);
            }
            Command::Policy { policy, .. } => {
                s.created = s.created.max(at);
                s.policy.set(policy.code(), at);
            }
            Command::Del { addr: None, .. } => {
                s.deleted = s.deleted.max(at);
            }
            Command::Del {
                addr: Some(addr), ..
            } => {
                let b = s.backends.get_or_insert_with(addr, || BackendState::NEW);
                b.exists.set(false, at);
                backend_touched = Some(addr);
            }
            Command::SetUp { addr, up, .. } => {
                let b = s.backends.get_or_insert_with(addr, || BackendState::NEW);
                b.up.set(up, at);
                backend_touched = Some(addr);
            }
            Command::Set { addr, attr, .. } => {
                let b = s.backends.get_or_insert_with(addr, || BackendState::NEW);
                match attr {
                    Attr::Weight(w) => b.weight.set(w, at),
                    Attr::Prio(p) => b.prio.set(p, at),
                    Attr::Limit(l) => b.limit.set(l, at),
                };
                backend_touched = Some(addr);
            }
            Command::Reset { .. } => return Vec::new(),
        }
        prune(s);
        let mut out = vec![service_entry(s)];
        if let Some(addr) = backend_touched {
            if let Some(b) = s.backends.get(&addr) {
                out.push(Entry::Backend {
                    name,
                    addr,
                    state: *b,
                });
            }
        }
        out
    }

    /// Merges an entry from a peer (or the state file); says whether anything changed. Refused,
    /// changing nothing: an entry stamped more than [`AHEAD_MS`] after `wall_ms`, and one that
    /// would make the replica hold more than [`held`]. Dead entries older than
    /// [`TOMBSTONE_MS`] are not taken in (they may already be collected everywhere else).
    pub fn merge(&mut self, e: &Entry, wall_ms: u64) -> Result<bool, Refused> {
        let horizon = ticks(wall_ms.saturating_sub(TOMBSTONE_MS));
        let name = *e.name();
        let newest = e.newest();
        if newest.time > ticks(wall_ms.saturating_add(AHEAD_MS)) {
            return Err(Refused::Future(newest.time / TICKS_PER_MS - wall_ms));
        }
        let dead = match e {
            Entry::Service {
                created, deleted, ..
            } => deleted >= created,
            Entry::Backend { state, .. } => !state.exists.value,
        };
        self.observe(newest);
        let known = self.services.get(name.as_str());
        if dead && newest.time < horizon && known.is_none() {
            return Ok(false);
        }
        let (services, backends) = held(self.cap);
        if known.is_none() && self.services.len() >= services {
            return Err(Refused::Services(self.services.len()));
        }
        if let (Some(s), Entry::Backend { addr, .. }) = (known, e) {
            if !s.backends.contains_key(addr) && s.backends.len() >= backends {
                return Err(Refused::Backends(s.backends.len()));
            }
        }
        let s = self.service_mut(name);
        let changed = match e {
            Entry::Service {
                created,
                deleted,
                policy,
                ..
            } => {
                let c = *created > s.created || *deleted > s.deleted;
                s.created = s.created.max(*created);
                s.deleted = s.deleted.max(*deleted);
                s.policy.merge(*policy) | c
            }
            Entry::Backend { addr, state, .. } => match s.backends.get_mut(addr) {
                Some(b) => b.merge(state),
                None if dead && newest.time < horizon => false,
                None => {
                    s.backends.insert(*addr, *state);
                    true
                }
            },
        };
        prune(s);
        Ok(changed)
    }

    /// Forgets tombstones older than [`TOMBSTONE_MS`]: dead backends, and deleted services left
    /// with no backend. Returns the names of services that vanished.
    pub fn collect(&mut self, wall_ms: u64) -> Vec<Name> {
        let horizon = ticks(wall_ms.saturating_sub(TOMBSTONE_MS));
        let old = |s: &ServiceState, b: &BackendState| {
            let live = b.exists.value && b.exists.at > s.deleted;
            !live && b.newest().time < horizon
        };
        let stale = |s: &ServiceState| s.backends.values().any(|b| old(s, b));
        let mut gone = Vec::new();
        let old_delete =
            |s: &ServiceState| s.created <= s.deleted && s.created.max(s.deleted).time < horizon;
        if !self.services.values().any(|s| stale(s) || old_delete(s)) {
            // Nothing to forget: nothing copied, no digest bucket to sum again.
            return gone;
        }
        Arc::make_mut(&mut self.services).retain(|_, s| {
            if stale(s) {
                let s = Arc::make_mut(s);
                let deleted = s.deleted;
                s.backends.retain(|_, b| {
                    let live = b.exists.value && b.exists.at > deleted;
                    live || b.newest().time >= horizon
                });
            }
            let keep = !s.backends.is_empty()
                || s.created > s.deleted
                || s.created.max(s.deleted).time >= horizon;
            if !keep {
                gone.push(s.name);
            }
            keep
        });
        // Rare (a tombstone's age, every few seconds at most): every bucket summed afresh.
        self.sums = sums(&self.services);
        self.dirty = VecMap::new();
        gone
    }

    /// The service as lookups should see it, or `None` if it is not visible. More live backends
    /// than a service has room for (concurrent adds on several nodes) keep the oldest ones, the
    /// same everywhere.
    pub fn service(&self, name: &str) -> Option<Service> {
        let s = self.services.get(name).filter(|s| s.visible())?;
        let mut out = Service::new(s.name);
        out.policy = Policy::from_code(s.policy.value).unwrap_or(Policy::RoundRobin);
        let mut live: Vec<(&IpAddr, &BackendState)> =
            s.backends.iter().filter(|(_, b)| s.live(b)).collect();
        // Addresses are unique: an unstable sort orders them exactly.
        live.sort_unstable_by_key(|(a, b)| (b.exists.at, **a));
        for (slot, (addr, b)) in out.backends.iter_mut().zip(live) {
            *slot = Some(Backend {
                addr: *addr,
                weight: b.weight.value,
                prio: b.prio.value,
                limit: b.limit.value,
                up: b.up.value,
                fast: false,
            });
        }
        Some(out)
    }

    /// Names of every service held (visible or not).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// The entries of every service in the buckets whose bit is set in `mask`.
    pub fn entries(&self, mask: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        for s in self.services.values() {
            if mask & (1 << bucket(&s.name)) == 0 {
                continue;
            }
            out.push(service_entry(s));
            out.extend(s.backends.iter().map(|(addr, b)| Entry::Backend {
                name: s.name,
                addr: *addr,
                state: *b,
            }));
        }
        out
    }

    /// One order-independent hash per bucket of everything held (the services changed since
    /// [`Replica::digest_cached`] last ran are hashed again, and not kept).
    pub fn digest(&self) -> [u32; BUCKETS] {
        fold(self.brought_up())
    }

    /// The digest computed from every entry, to hold the kept sums to.
    #[cfg(test)]
    fn digest_full(&self) -> [u32; BUCKETS] {
        fold(sums(&self.services))
    }

    /// [`Replica::digest`], from the bucket sums kept between changes: only the services
    /// changed since the last call are hashed again.
    pub fn digest_cached(&mut self) -> [u32; BUCKETS] {
        if !self.dirty.is_empty() {
            self.sums = self.brought_up();
            self.dirty = VecMap::new();
        }
        fold(self.sums)
    }

    /// The bucket sums with each changed service's old share replaced by its share now.
    fn brought_up(&self) -> [u64; BUCKETS] {
        let mut sums = self.sums;
        for (name, was) in &self.dirty {
            let Some(s) = self.services.get(name.as_str()) else {
                // Gone since (only `collect` removes services, and it sums everything).
                continue;
            };
            let b = bucket(&s.name);
            sums[b] = sums[b].wrapping_sub(*was).wrapping_add(service_hash(s));
        }
        sums
    }
}

fn fold(sums: [u64; BUCKETS]) -> [u32; BUCKETS] {
    sums.map(|h| (h ^ (h >> 32)) as u32)
}

/// Per bucket, the sum of its services' [`service_hash`]es: every entry's hash.
fn sums(services: &VecMap<String, Arc<ServiceState>>) -> [u64; BUCKETS] {
    let mut sums = [0u64; BUCKETS];
    for s in services.values() {
        let b = bucket(&s.name);
        sums[b] = sums[b].wrapping_add(service_hash(s));
    }
    sums
}

/// A service's share of its bucket's sum: the sum of its entries' hashes (its own and its
/// backends').
fn service_hash(s: &ServiceState) -> u64 {
    s.backends
        .iter()
        .fold(entry_hash(&service_entry(s)), |sum, (addr, st)| {
            sum.wrapping_add(entry_hash(&Entry::Backend {
                name: s.name,
                addr: *addr,
                state: *st,
            }))
        })
}

/// Resets every field a service delete superseded (stamp not newer than `deleted`) to its
/// default, and drops backends left with nothing but defaults. Applied after every change, it
/// commutes with merging, so every node that has seen the same writes holds the same entries.
fn prune(s: &mut ServiceState) {
    let deleted = s.deleted;
    fn reset<T: Copy>(r: &mut Reg<T>, default: Reg<T>, deleted: Stamp) {
        if r.at <= deleted {
            *r = default;
        }
    }
    let new = BackendState::NEW;
    for b in s.backends.values_mut() {
        reset(&mut b.exists, new.exists, deleted);
        reset(&mut b.up, new.up, deleted);
        reset(&mut b.weight, new.weight, deleted);
        reset(&mut b.prio, new.prio, deleted);
        reset(&mut b.limit, new.limit, deleted);
    }
    s.backends.retain(|_, b| *b != new);
    reset(&mut s.policy, Reg::new(Policy::RoundRobin.code()), deleted);
}

fn service_entry(s: &ServiceState) -> Entry {
    Entry::Service {
        name: s.name,
        created: s.created,
        deleted: s.deleted,
        policy: s.policy,
    }
}

fn entry_hash(e: &Entry) -> u64 {
    let stamp = |h: u64, s: Stamp| fnv(fnv(h, &s.time.to_le_bytes()), &s.node.to_le_bytes());
    let h = fnv(0xcbf2_9ce4_8422_2325, e.name().as_bytes());
    match e {
        Entry::Service {
            created,
            deleted,
            policy,
            ..
        } => {
            let h = stamp(stamp(fnv(h, b"s"), *created), *deleted);
            stamp(fnv(h, &[policy.value]), policy.at)
        }
        Entry::Backend { addr, state, .. } => {
            let h = match addr {
                IpAddr::V4(a) => fnv(h, &a.octets()),
                IpAddr::V6(a) => fnv(h, &a.octets()),
            };
            let s = state;
            let h = stamp(fnv(h, &[u8::from(s.exists.value)]), s.exists.at);
            let h = stamp(fnv(h, &[u8::from(s.up.value)]), s.up.at);
            let h = stamp(fnv(h, &s.weight.value.to_le_bytes()), s.weight.at);
            let h = stamp(fnv(h, &s.prio.value.to_le_bytes()), s.prio.at);
            stamp(fnv(h, &s.limit.value.to_le_bytes()), s.limit.at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbfo_core::MAX_BACKENDS;
    use lbfo_core::{parse_line, Line};

    fn cmd(line: &str) -> Command {
        match parse_line(line) {
            Ok(Some(Line::Command(c))) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// The visible table as text, for comparisons.
    fn show(r: &Replica) -> String {
        let mut o = String::new();
        for n in r.names() {
            if let Some(s) = r.service(n) {
                o += &format!("{n} {}:", s.policy);
                for (_, b) in s.iter() {
                    let st = if b.up { "up" } else { "down" };
                    o += &format!(" {} {st} w{} p{} l{};", b.addr, b.weight, b.prio, b.limit);
                }
                o += "\n";
            }
        }
        o
    }

    fn run(r: &mut Replica, lines: &str, t: u64) -> Vec<Entry> {
        lines
            .lines()
            .flat_map(|l| r.command(&cmd(l), t).unwrap())
            .collect()
    }

    #[test]
    fn commands_and_errors_mirror_the_local_table() {
        let mut r = Replica::new(1);
        run(
            &mut r,
            "add a.lan 10.0.0.1 weight=3\nadd a.lan 10.0.0.2\ndown a.lan 10.0.0.2\npolicy b.lan failover",
            100,
        );
        assert_eq!(
            show(&r),
            "a.lan roundrobin: 10.0.0.1 up w3 p1 l0; 10.0.0.2 down w1 p1 l0;\nb.lan failover:\n"
        );
        assert_eq!(
            r.command(&cmd("down a.lan 10.0.0.9"), 100),
            Err(ApplyError::NoBackend)
        );
        assert_eq!(
            r.command(&cmd("up c.lan 10.0.0.9"), 100),
            Err(ApplyError::NoService)
        );
        run(&mut r, "del a.lan 10.0.0.1", 100);
        assert_eq!(
            r.command(&cmd("weight a.lan 10.0.0.1 5"), 100),
            Err(ApplyError::NoBackend)
        );
        run(&mut r, "add a.lan 10.0.0.1", 100);
        assert_eq!(
            show(&r).lines().next().unwrap(),
            "a.lan roundrobin: 10.0.0.2 down w1 p1 l0; 10.0.0.1 up w1 p1 l0;",
            "a re-added backend starts from the defaults"
        );
        run(&mut r, "del a.lan\ndel b.lan", 100);
        assert_eq!(show(&r), "");
        assert_eq!(
            r.command(&cmd("del a.lan"), 100),
            Err(ApplyError::NoService)
        );
        run(&mut r, "add a.lan 10.0.0.3", 100);
        assert_eq!(show(&r), "a.lan roundrobin: 10.0.0.3 up w1 p1 l0;\n");
        for i in 4..=(3 + MAX_BACKENDS as u32 - 1) {
            run(&mut r, &format!("add a.lan 10.0.0.{i}"), 100);
        }
        assert_eq!(
            r.command(&cmd("add a.lan 10.0.1.1"), 100),
            Err(ApplyError::ServiceFull(MAX_BACKENDS))
        );
    }

    #[test]
    fn concurrent_conflicts_resolve_by_stamp_then_node() {
        let (mut a, mut b) = (Replica::new(1), Replica::new(2));
        let base = run(&mut a, "add w.lan 10.0.0.1", 100);
        for e in &base {
            b.merge(e, 100).unwrap();
        }
        // Same wall time on both: the clocks tie and node 2 wins the weight.
        let ea = run(&mut a, "weight w.lan 10.0.0.1 5", 200);
        let eb = run(&mut b, "weight w.lan 10.0.0.1 7", 200);
        for e in &eb {
            a.merge(e, 200).unwrap();
        }
        for e in &ea {
            b.merge(e, 200).unwrap();
        }
        assert_eq!(show(&a), show(&b));
        assert!(show(&a).contains("w7"), "{}", show(&a));
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn a_late_old_add_does_not_resurrect() {
        let (mut a, mut b) = (Replica::new(1), Replica::new(2));
        let add = run(&mut a, "add w.lan 10.0.0.1\nadd w.lan 10.0.0.2", 100);
        let del = run(&mut a, "del w.lan 10.0.0.1", 150);
        for e in del.iter().chain(&add) {
            b.merge(e, 200).unwrap();
        }
        assert_eq!(show(&b), "w.lan roundrobin: 10.0.0.2 up w1 p1 l0;\n");
        let del_svc = run(&mut a, "del w.lan", 300);
        for e in del_svc.iter().chain(&add).chain(&del) {
            b.merge(e, 300).unwrap();
        }
        assert_eq!(show(&b), "");
        assert_eq!(
            a.digest(),
            b.digest(),
            "superseded entries are pruned alike"
        );
    }

    #[test]
    fn config_lines_lose_to_later_commands_and_win_over_older() {
        let mut a = Replica::new(1);
        run(&mut a, "add w.lan 10.0.0.1\ndown w.lan 10.0.0.1", 5_000);
        // Restart with a config written before the down: the down stays.
        let mut fresh = Replica::new(1);
        for l in ["add w.lan 10.0.0.1 weight=2", "add w.lan 10.0.0.9"] {
            fresh.config_line(&cmd(l), 1_000, 1_000);
        }
        for e in a.entries(u64::MAX) {
            fresh.merge(&e, 6_000).unwrap();
        }
        assert_eq!(
            show(&fresh),
            "w.lan roundrobin: 10.0.0.9 up w1 p1 l0; 10.0.0.1 down w1 p1 l0;\n"
        );
        // An edited config (newer) wins over the older command for the fields it sets.
        fresh.config_line(&cmd("add w.lan 10.0.0.1 weight=4"), 7_000, 7_000);
        assert!(
            show(&fresh).contains("10.0.0.1 down w4"),
            "{}",
            show(&fresh)
        );
    }

    #[test]
    fn tombstones_are_collected_after_the_bound_and_not_taken_back() {
        let mut a = Replica::new(1);
        let add = run(&mut a, "add w.lan 10.0.0.1\nadd w.lan 10.0.0.2", 1_000);
        let del = run(&mut a, "del w.lan 10.0.0.1", 2_000);
        assert_eq!(a.entries(u64::MAX).len(), 3, "the tombstone is held");
        assert!(a.collect(2_000 + TOMBSTONE_MS - 1).is_empty());
        assert_eq!(a.entries(u64::MAX).len(), 3);
        a.collect(2_001 + TOMBSTONE_MS);
        assert_eq!(a.entries(u64::MAX).len(), 2, "collected");
        let late = 3_000 + TOMBSTONE_MS;
        assert!(
            !a.merge(&del[1], late).unwrap(),
            "an old tombstone is not taken back"
        );
        let mut b = Replica::new(2);
        for e in &add {
            b.merge(e, late).unwrap();
        }
        assert!(
            show(&b).contains("10.0.0.1"),
            "a live entry is always taken"
        );
        assert!(
            b.merge(&del[1], late).unwrap(),
            "a node that never saw the delete takes it over its older add"
        );
        b.collect(late);
        assert_eq!(show(&b), show(&a));
        assert_eq!(
            b.digest(),
            a.digest(),
            "and then forgets it like everyone else"
        );
        let gone = run(&mut a, "del w.lan", late);
        assert!(!gone.is_empty());
        assert_eq!(a.collect(late + TOMBSTONE_MS + 1).len(), 1);
        assert!(a.names().next().is_none());
    }

    #[test]
    fn stamps_from_the_future_are_refused_and_the_clock_never_wraps() {
        let mut a = Replica::new(1);
        let now = 1_000_000;
        let sent = run(&mut a, "add w.lan 10.0.0.1", now);
        let mut b = Replica::new(2);
        let at = |e: &Entry, t: u64| {
            let mut e = e.clone();
            match &mut e {
                Entry::Service { created, .. } => created.time = t,
                Entry::Backend { state, .. } => state.up.at.time = t,
            }
            e
        };
        // At the edge of the window: taken; one ms beyond, or u64::MAX: refused, nothing changed.
        for e in &sent {
            assert_eq!(b.merge(&at(e, ticks(now + AHEAD_MS)), now), Ok(true));
        }
        let before = b.digest();
        for e in &sent {
            let t = ticks(now + AHEAD_MS + 1);
            assert_eq!(b.merge(&at(e, t), now), Err(Refused::Future(AHEAD_MS + 1)));
            assert!(b.merge(&at(e, u64::MAX), now).is_err());
        }
        // A register that is not the entry's main stamp counts as much.
        let Entry::Service {
            name,
            created,
            deleted,
            mut policy,
        } = sent[0].clone()
        else {
            panic!()
        };
        policy.at.time = u64::MAX;
        let e = Entry::Service {
            name,
            created,
            deleted,
            policy,
        };
        assert!(b.merge(&e, now).is_err());
        assert_eq!(b.digest(), before);
        assert!(
            b.clock <= ticks(now + AHEAD_MS),
            "the hybrid clock is not dragged beyond the window"
        );
        // A stamp at the clock's end stays there rather than wrapping to 0.
        b.clock = u64::MAX;
        assert_eq!(b.tick(now).time, u64::MAX);
        // A config file modified "in the future" is stamped now: its entries are taken by
        // every node, and a later command made elsewhere beats them.
        let mut c = Replica::new(3);
        let config = c.config_line(&cmd("add w.lan 10.0.0.1"), now + 3_600_000, now);
        let mut d = Replica::new(4);
        for e in &config {
            assert_eq!(d.merge(e, now), Ok(true));
        }
        for e in run(&mut d, "down w.lan 10.0.0.1", now + 1) {
            c.merge(&e, now + 1).unwrap();
        }
        assert!(show(&c).contains("10.0.0.1 down"), "{}", show(&c));
    }

    /// Found by the soak's 10^5-line flood: in whole milliseconds, each of a burst of commands
    /// stamped a millisecond later than the last, and past 30,000 of them the peers refused
    /// the node's changes as stamped in the future.
    #[test]
    fn a_burst_of_commands_does_not_run_ahead_of_the_clock() {
        let (mut a, mut b) = (Replica::new(1), Replica::new(2));
        let t = 1_000_000;
        let mut last = run(&mut a, "add w.lan 10.0.0.1", t);
        for i in 0..2 * AHEAD_MS {
            last = run(&mut a, &format!("weight w.lan 10.0.0.1 {}", i % 100), t);
        }
        for e in &last {
            assert_eq!(b.merge(e, t), Ok(true));
        }
        assert!(
            a.clock < ticks(t + 1000),
            "{} ms ahead",
            a.clock / TICKS_PER_MS - t
        );
    }

    #[test]
    fn a_replica_holds_no_more_than_twice_the_table() {
        let cap = Capacity::new(4, 2).unwrap();
        let (services, backends) = held(cap);
        let mut a = Replica::new(1);
        let mut b = Replica::with_capacity(2, cap);
        let t = 1_000_000;
        let mut sent = Vec::new();
        for i in 0..=services {
            sent.extend(run(&mut a, &format!("add s{i}.lan 10.0.0.1"), t));
        }
        for i in 1..=backends + 1 {
            sent.extend(run(&mut a, &format!("add s0.lan 10.0.1.{i}"), t));
        }
        let mut refused = Vec::new();
        for e in &sent {
            if let Err(why) = b.merge(e, t) {
                refused.push(why);
            }
        }
        assert_eq!(b.names().count(), services);
        let held = b.services.get("s0.lan").unwrap().backends.len();
        assert_eq!(held, backends);
        assert!(
            refused.contains(&Refused::Services(services)),
            "{refused:?}"
        );
        assert!(
            refused.contains(&Refused::Backends(backends)),
            "{refused:?}"
        );
        // What it holds still takes changes; deleted and collected, there is room again.
        let down = run(&mut a, "down s0.lan 10.0.0.1", t + 1);
        assert_eq!(b.merge(&down[1], t + 1), Ok(true));
        let del = run(&mut a, "del s1.lan", t + 2);
        b.merge(&del[0], t + 2).unwrap();
        // (Some ticks beyond the tombstones' stamps.)
        let later = t + 1000 + TOMBSTONE_MS;
        b.collect(later);
        let late = run(&mut a, &format!("add s{services}.lan 10.0.0.1"), later);
        assert_eq!(b.merge(&late[0], later), Ok(true));
        // The local table's own capacity follows the capacity given (the replica holds more
        // visible services than that, from the wire).
        assert_eq!(
            b.command(&cmd("add u.lan 10.0.0.1"), later),
            Err(ApplyError::TableFull(4))
        );
    }

    use crate::TestRng as Rng;

    fn random_command(rng: &mut Rng) -> Command {
        let s = rng.below(3);
        let a = rng.below(4) + 1;
        let line = match rng.below(9) {
            0 | 1 => format!("add s{s}.lan 10.0.0.{a} weight={}", rng.below(5)),
            2 => format!("del s{s}.lan 10.0.0.{a}"),
            3 => format!("del s{s}.lan"),
            4 => format!("down s{s}.lan 10.0.0.{a}"),
            5 => format!("up s{s}.lan 10.0.0.{a}"),
            6 => format!("prio s{s}.lan 10.0.0.{a} {}", rng.below(3)),
            7 => format!(
                "policy s{s}.lan {}",
                ["failover", "weighted", "leastused"][rng.below(3) as usize]
            ),
            _ => format!("limit s{s}.lan 10.0.0.{a} {}", rng.below(3)),
        };
        cmd(&line)
    }

    /// Property: nodes that issue random commands concurrently and then receive every entry in
    /// any order, with duplicates and with stale copies interleaved, end identical — table and
    /// digest alike.
    #[test]
    fn any_order_loss_and_duplication_converge() {
        for seed in 1..200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut nodes: Vec<Replica> = (1..=4).map(Replica::new).collect();
            let mut sent: Vec<Entry> = Vec::new();
            let mut t = 1_000;
            for _ in 0..40 {
                t += rng.below(3);
                let n = rng.below(4) as usize;
                let c = random_command(&mut rng);
                if let Ok(es) = nodes[n].command(&c, t) {
                    sent.extend(es);
                }
                // Some entries reach some nodes early (partial delivery).
                if !sent.is_empty() {
                    let e = sent[rng.below(sent.len() as u64) as usize].clone();
                    nodes[rng.below(4) as usize].merge(&e, t).unwrap();
                }
                // Digests cached along the way must follow every change.
                let d = nodes[n].digest_cached();
                assert_eq!(d, nodes[n].digest_full(), "seed {seed}");
            }
            for node in nodes.iter_mut() {
                let mut order: Vec<usize> = (0..sent.len()).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i as u64 + 1) as usize);
                }
                for &i in order.iter().chain(order.iter().take(5)) {
                    node.merge(&sent[i], t).unwrap();
                }
            }
            for n in nodes.iter_mut() {
                n.collect(t + TOMBSTONE_MS / 2);
                assert_eq!(n.digest_cached(), n.digest_full(), "seed {seed}");
            }
            let first = (show(&nodes[0]), nodes[0].digest());
            for n in &nodes[1..] {
                assert_eq!((show(n), n.digest()), first, "seed {seed}");
            }
            // Anti-entropy from full state gives the same result as from the entries.
            let mut late = Replica::new(9);
            for e in nodes[2].entries(u64::MAX) {
                late.merge(&e, t).unwrap();
            }
            assert_eq!(
                (show(&late), late.digest()),
                first,
                "seed {seed}: late joiner"
            );
        }
    }

    #[test]
    fn digest_buckets_localise_differences() {
        let (mut a, mut b) = (Replica::new(1), Replica::new(2));
        for e in run(&mut a, "add x.lan 10.0.0.1\nadd y.lan 10.0.0.2", 10) {
            b.merge(&e, 10).unwrap();
        }
        assert_eq!(a.digest(), b.digest());
        run(&mut a, "down x.lan 10.0.0.1", 20);
        let (da, db) = (a.digest(), b.digest());
        let diff: Vec<usize> = (0..BUCKETS).filter(|&i| da[i] != db[i]).collect();
        assert_eq!(diff, [bucket(&cmd("reset x.lan").service().clone())]);
        let mask = diff.iter().fold(0u64, |m, &i| m | 1 << i);
        for e in a.entries(mask) {
            b.merge(&e, 30).unwrap();
        }
        assert_eq!(a.digest(), b.digest());
    }
}
