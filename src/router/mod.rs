//! The router: which chat server instance serves a request.
//!
//! Owns the alias table, each instance's admin state and health, and the choice of instance
//! for a new chat (or for a chat whose instance is gone). It does no I/O: load figures come
//! from each adapter's last-known [`backend_api::Load`], health from the verdicts the checker
//! tasks and requests report, so placing a chat costs a few atomic reads. A new table replaces
//! the old one whole (see `Gateway::router`), so a request always sees one consistent table;
//! a reload carries the [`Instance`]s it keeps over into the new table.

mod config;
mod health;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use backend_api::ChatBackend;
use rand::Rng;

pub use config::{AdminState, HealthConfig, Placement};
pub use health::{Health, HealthState};

/// One chat server instance.
pub struct Instance {
    /// The alias clients carry.
    pub alias: Arc<str>,
    /// The adapter that talks to it.
    pub backend: Arc<dyn ChatBackend>,
    /// Relative share of new chats.
    pub weight: u32,
    /// Tenants it serves; empty means all.
    pub tenants: Vec<String>,
    /// Set by the operator; runtime changes live here, per gateway process. Shared with the
    /// same instance in later tables (reload).
    state: Arc<AtomicU8>,
    /// Verdicts of the health checks and of real requests; shared like `state`.
    pub health: Arc<Health>,
}

/// How an alias resolves.
pub enum Route<'a> {
    /// A configured instance (whatever its state and health).
    Live(&'a Arc<Instance>),
    /// An alias a reload removed: its chats move elsewhere.
    Retired,
    /// Never configured here.
    Unknown,
}

impl Instance {
    pub fn new(
        alias: &str,
        backend: Arc<dyn ChatBackend>,
        weight: u32,
        tenants: Vec<String>,
        state: AdminState,
        health: Health,
    ) -> Instance {
        Instance {
            alias: Arc::from(alias),
            backend,
            weight,
            tenants,
            state: Arc::new(AtomicU8::new(state as u8)),
            health: Arc::new(health),
        }
    }

    /// The same instance (adapter, state, health) with a new weight and tenant list: what a
    /// reload that changed only those makes of it.
    pub fn reconfigured(&self, weight: u32, tenants: Vec<String>) -> Instance {
        Instance {
            alias: Arc::clone(&self.alias),
            backend: Arc::clone(&self.backend),
            weight,
            tenants,
            state: Arc::clone(&self.state),
            health: Arc::clone(&self.health),
        }
    }

    pub fn state(&self) -> AdminState {
        match self.state.load(Ordering::Acquire) {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maint,
        }
    }

    pub fn set_state(&self, state: AdminState) {
        let old = self.state.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            tracing::info!(alias = %self.alias, ?state, "instance admin state set");
        }
    }

    pub fn serves(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }

    /// Whether requests on the chats it holds go there: not in maint, and up.
    pub fn serves_its_chats(&self) -> bool {
        self.state() != AdminState::Maint && self.health.is_up()
    }

    /// Whether it may take a new chat now: ready, up, and accepting.
    pub fn takes_new_chats(&self) -> bool {
        self.relative_load().is_some()
    }

    /// Open chats relative to weight, when it may take a new chat: ready, up, accepting.
    fn relative_load(&self) -> Option<f64> {
        if self.state() != AdminState::Ready || !self.health.is_up() {
            return None;
        }
        let load = self.backend.load();
        load.accepting
            .then(|| load.active as f64 / f64::from(self.weight))
    }
}

/// The alias table and placement policy.
pub struct Router {
    instances: Vec<Arc<Instance>>,
    by_alias: HashMap<Arc<str>, usize>,
    /// Aliases earlier tables had and this one has not: chats there fail over (not code 201).
    retired: HashSet<Arc<str>>,
    placement: Placement,
    next: AtomicUsize,
}

impl Router {
    pub fn new(instances: Vec<Instance>, placement: Placement) -> Router {
        Self::from_shared(
            instances.into_iter().map(Arc::new).collect(),
            placement,
            None,
        )
    }

    /// A table from instances some of which an older table holds too; aliases of `previous`
    /// that are gone are remembered as retired.
    pub fn from_shared(
        instances: Vec<Arc<Instance>>,
        placement: Placement,
        previous: Option<&Router>,
    ) -> Router {
        let by_alias: HashMap<Arc<str>, usize> = instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (Arc::clone(&inst.alias), i))
            .collect();
        let retired = previous
            .map(|p| {
                p.retired
                    .iter()
                    .chain(p.by_alias.keys())
                    .filter(|a| !by_alias.contains_key(*a))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Router {
            instances,
            by_alias,
            retired,
            placement,
            next: AtomicUsize::new(0),
        }
    }

    /// The instance an alias names.
    pub fn get(&self, alias: &str) -> Option<&Arc<Instance>> {
        self.by_alias.get(alias).map(|&i| &self.instances[i])
    }

    /// What an alias a client sent stands for.
    pub fn route(&self, alias: &str) -> Route<'_> {
        match self.get(alias) {
            Some(instance) => Route::Live(instance),
            None if self.retired.contains(alias) => Route::Retired,
            None => Route::Unknown,
        }
    }

    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    /// The instance for a new chat of `tenant`, or `None` when none can take it.
    pub fn place(&self, tenant: &str) -> Option<&Arc<Instance>> {
        self.place_except(tenant, &[])
    }

    /// Where a chat whose instance cannot serve it is restored: among the ready, healthy,
    /// accepting instances of its tenant (less `except`), the one its chat id ranks first
    /// (rendezvous hashing). Every gateway replica, and every request of the chat, picks the
    /// same instance while they see the same instances, so two requests that find the chat's
    /// instance dead at once (a customer's message and its open event stream, on two
    /// replicas) restore it in the same place rather than each on its own; and the chats of
    /// a dead instance still spread evenly over the others.
    pub fn place_chat_except(
        &self,
        tenant: &str,
        chat_id: &str,
        except: &[&str],
    ) -> Option<&Arc<Instance>> {
        self.instances
            .iter()
            .filter(|i| i.serves(tenant) && !except.contains(&&*i.alias))
            .filter(|i| i.relative_load().is_some())
            .max_by_key(|i| rank(chat_id, &i.alias))
    }

    /// Like [`Router::place`], never choosing one of `except` (instances just found failing).
    pub fn place_except(&self, tenant: &str, except: &[&str]) -> Option<&Arc<Instance>> {
        let open: Vec<_> = self
            .instances
            .iter()
            .filter(|i| i.serves(tenant) && !except.contains(&&*i.alias))
            .filter_map(|i| i.relative_load().map(|l| (i, l)))
            .collect();
        match self.placement {
            Placement::RoundRobin => {
                if open.is_empty() {
                    return None;
                }
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                Some(open[n % open.len()].0)
            }
            Placement::LeastLoaded => {
                // Power of two choices: two distinct random candidates, the lighter wins.
                // Cheap, and unlike "always the least loaded" it does not stampede one
                // instance from several gateways whose load figures lag.
                match open.len() {
                    0 => None,
                    1 => Some(open[0].0),
                    n => {
                        let mut rng = rand::thread_rng();
                        let a = rng.gen_range(0..n);
                        let b = (a + rng.gen_range(1..n)) % n;
                        let (ia, la) = open[a];
                        let (ib, lb) = open[b];
                        Some(if lb < la { ib } else { ia })
                    }
                }
            }
        }
    }
}

/// A chat's rank on an instance for [`Router::place_chat_except`]: FNV-1a over the chat id
/// and the alias, the same in every process.
fn rank(chat_id: &str, alias: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in chat_id.bytes().chain([0]).chain(alias.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; one finalising round spreads them.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_engine::{Behaviour, Engine, MockBackend};

    fn instance(alias: &str, weight: u32, tenants: &[&str], limit: u64) -> Instance {
        Instance::new(
            alias,
            Arc::new(MockBackend::new(Engine::new(Behaviour {
                session_limit: std::num::NonZeroU64::new(limit).expect("a non-zero limit"),
                ..Behaviour::default()
            }))),
            weight,
            tenants.iter().map(|t| t.to_string()).collect(),
            AdminState::Ready,
            Health::new(alias, &HealthConfig::default()),
        )
    }

    fn fill(router: &Router, tenant: &str, n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let inst = router.place(tenant).expect("an instance");
            create(&*inst.backend, tenant);
            *counts.entry(inst.alias.to_string()).or_default() += 1;
        }
        counts
    }

    fn create(backend: &dyn ChatBackend, tenant: &str) {
        let chat = backend_api::NewChat {
            tenant_name: tenant.into(),
            nickname: "n".into(),
            endpoint: "default".into(),
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(backend.create(chat))
            .unwrap();
    }

    #[test]
    fn a_moved_chat_goes_to_the_same_instance_from_every_replica_and_chats_spread() {
        let table = || {
            Router::new(
                ["117", "118", "119", "120"]
                    .iter()
                    .map(|a| instance(a, 1, &[], 1000))
                    .collect(),
                Placement::LeastLoaded,
            )
        };
        // Two replicas: separate tables, the same instances.
        let (a, b) = (table(), table());
        let mut counts: HashMap<String, usize> = HashMap::new();
        for n in 0..3000 {
            let chat = format!("00019A9SXTQW{n:04}");
            let here = a.place_chat_except("T", &chat, &["117"]).unwrap();
            let there = b.place_chat_except("T", &chat, &["117"]).unwrap();
            assert_eq!(here.alias, there.alias, "{chat}");
            assert_ne!(&*here.alias, "117");
            *counts.entry(here.alias.to_string()).or_default() += 1;
        }
        // The dead instance's chats spread evenly over the three others.
        for alias in ["118", "119", "120"] {
            let n = counts[alias];
            assert!((850..=1150).contains(&n), "{counts:?}");
        }
        // An instance that stops accepting is passed over, for the next in rank.
        let chat = "00019A9SXTQW0001";
        let first = a.place_chat_except("T", chat, &[]).unwrap().alias.clone();
        a.instances
            .iter()
            .find(|i| i.alias == first)
            .unwrap()
            .set_state(AdminState::Maint);
        let next = a.place_chat_except("T", chat, &[]).unwrap();
        assert_ne!(next.alias, first);
    }

    #[test]
    fn least_loaded_spreads_by_weight() {
        let router = Router::new(
            vec![instance("117", 1, &[], 1000), instance("118", 3, &[], 1000)],
            Placement::LeastLoaded,
        );
        let counts = fill(&router, "T", 400);
        let a = counts["117"] as f64;
        let b = counts["118"] as f64;
        assert!((b / a - 3.0).abs() < 0.5, "{counts:?}");
    }

    #[test]
    fn tenants_limits_and_round_robin() {
        let router = Router::new(
            vec![
                instance("1", 1, &["A"], 1000),
                instance("2", 1, &[], 2),
                instance("3", 1, &["A"], 1000),
            ],
            Placement::RoundRobin,
        );
        let counts = fill(&router, "B", 2);
        assert_eq!(counts["2"], 2);
        assert!(
            router.place("B").is_none(),
            "the only instance for B is full"
        );
        let counts = fill(&router, "A", 10);
        assert_eq!((counts["1"], counts["3"]), (5, 5));
        assert!(router.get("3").is_some() && router.get("4").is_none());
    }

    #[test]
    fn only_ready_healthy_instances_take_new_chats() {
        let router = Router::new(
            vec![
                instance("1", 1, &[], 1000),
                instance("2", 1, &[], 1000),
                instance("3", 1, &[], 1000),
            ],
            Placement::LeastLoaded,
        );
        router.get("1").unwrap().set_state(AdminState::Drain);
        router
            .get("2")
            .unwrap()
            .health
            .refused("connection refused");
        let counts = fill(&router, "A", 20);
        assert_eq!(counts.get("3"), Some(&20), "{counts:?}");
        assert!(router.place_except("A", &["3"]).is_none());
        let one = router.get("1").unwrap();
        assert!(one.serves_its_chats(), "drain keeps its chats");
        one.set_state(AdminState::Maint);
        assert!(!one.serves_its_chats());
        assert!(!router.get("2").unwrap().serves_its_chats());

        // A reload without "3": its alias is retired, not unknown.
        let kept = router.instances()[..2].to_vec();
        let next = Router::from_shared(kept, Placement::RoundRobin, Some(&router));
        assert!(matches!(next.route("3"), Route::Retired));
        assert!(matches!(next.route("1"), Route::Live(_)));
        assert!(matches!(next.route("9"), Route::Unknown));
        let after = Router::from_shared(Vec::new(), Placement::RoundRobin, Some(&next));
        assert!(matches!(after.route("3"), Route::Retired), "remembered");
    }
}
