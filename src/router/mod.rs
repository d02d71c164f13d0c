//! The router: which chat server instance serves a request.
//!
//! Owns the alias table and the choice of instance for a new chat. It does no I/O: load
//! figures come from each adapter's last-known [`backend_api::Load`], so placing a chat costs
//! a few atomic reads. A new table replaces the old one whole (see `Gateway::router`), so a
//! request always sees one consistent table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use backend_api::ChatBackend;
use rand::Rng;

use crate::config::Placement;

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
}

impl Instance {
    fn serves(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }

    /// Open chats relative to weight: what placement compares.
    fn relative_load(&self) -> Option<f64> {
        let load = self.backend.load();
        load.accepting
            .then(|| load.active as f64 / f64::from(self.weight))
    }
}

/// The alias table and placement policy.
pub struct Router {
    instances: Vec<Arc<Instance>>,
    by_alias: HashMap<Arc<str>, usize>,
    placement: Placement,
    next: AtomicUsize,
}

impl Router {
    pub fn new(instances: Vec<Instance>, placement: Placement) -> Router {
        let instances: Vec<Arc<Instance>> = instances.into_iter().map(Arc::new).collect();
        let by_alias = instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (Arc::clone(&inst.alias), i))
            .collect();
        Router {
            instances,
            by_alias,
            placement,
            next: AtomicUsize::new(0),
        }
    }

    /// The instance an alias names.
    pub fn get(&self, alias: &str) -> Option<&Arc<Instance>> {
        self.by_alias.get(alias).map(|&i| &self.instances[i])
    }

    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    /// The instance for a new chat of `tenant`, or `None` when none can take it.
    pub fn place(&self, tenant: &str) -> Option<&Arc<Instance>> {
        let candidates = || {
            self.instances
                .iter()
                .filter(move |i| i.serves(tenant))
                .filter_map(|i| i.relative_load().map(|l| (i, l)))
        };
        match self.placement {
            Placement::RoundRobin => {
                let open: Vec<_> = candidates().collect();
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
                let open: Vec<_> = candidates().collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use backend_mock::{Behaviour, Engine, MockBackend};

    fn instance(alias: &str, weight: u32, tenants: &[&str], limit: u64) -> Instance {
        Instance {
            alias: alias.into(),
            backend: Arc::new(MockBackend::new(Engine::new(Behaviour {
                session_limit: limit,
                ..Behaviour::default()
            }))),
            weight,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
        }
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
}
