//! The cluster's central type: joining (connect, register, read
//! everything), the store the IPAM opens over, and the background tasks
//! (keepalive, watch, claimer, releaser, fence reporting) on the etcd runtime.

use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::claim::Claimer;
use super::confirm::Bindings;
use super::etcd::Etcd;
use super::member::{keepalive, pause, register};
use super::node::Node;
use super::release::Releaser;
use super::replica::Replica;
use super::store::ClusterStore;
use super::watch::Watch;
use crate::config::ClusterConfig;
use crate::events::{EventKind, EventLog};
use crate::ipam::{ClusterHooks, Ipam, IpamError};
use crate::stats::Stats;

pub struct Cluster {
    pub node: Arc<Node>,
    pub etcd: Arc<Etcd>,
    replica: Arc<Mutex<Replica>>,
    /// The revision everything was read at.
    read_at: AtomicI64,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node.name)
            .finish()
    }
}

impl Drop for Cluster {
    /// Stops the tasks; the keepalive gives the lease back on its way out.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Cluster {
    /// Joins the cluster: connects to etcd, registers this node (waiting up
    /// to two TTLs for a previous run's registration to expire), keeps it
    /// alive, and reads everything under the prefix. Blocking.
    pub fn join(
        config: &ClusterConfig,
        stats: Arc<Stats>,
    ) -> Result<(Self, Arc<ClusterStore>), IpamError> {
        let cluster = Self::connect(config, stats)?;
        cluster.enter()?;
        let store = cluster.store();
        Ok((cluster, store))
    }

    /// A node of the cluster `config` names, not yet registered (it is
    /// fenced: it writes nothing until [`Cluster::enter`] succeeds). Fails
    /// only on endpoints etcd-client refuses (connecting is lazy).
    pub fn connect(config: &ClusterConfig, stats: Arc<Stats>) -> Result<Self, IpamError> {
        let etcd = Arc::new(Etcd::connect(&config.etcd, &config.prefix)?);
        let node = Arc::new(Node::new(
            &config.node,
            config.lease_ttl,
            config.block_size,
            stats,
        ));
        // Fenced until registered (the fence reporter takes over at start).
        node.stats.ipam.cluster_fenced.store(1, Relaxed);
        Ok(Self {
            node,
            etcd,
            replica: Arc::default(),
            read_at: AtomicI64::new(0),
            cancel: CancellationToken::new(),
        })
    }

    /// The IPAM's store on this cluster (reads from the node's copy).
    pub fn store(&self) -> Arc<ClusterStore> {
        Arc::new(ClusterStore {
            etcd: self.etcd.clone(),
            replica: self.replica.clone(),
            node: self.node.clone(),
        })
    }

    /// Whether this node has registered (an epoch to fence its writes with).
    pub fn registered(&self) -> bool {
        self.node.epoch.load(Relaxed) != 0
    }

    /// Registers this node (waiting up to two TTLs for a previous run's
    /// registration to expire), keeps it alive, and reads everything under
    /// the prefix into the copy. An etcd that does not answer is an
    /// [`IpamError::Cluster`] (try again); a name another live node holds
    /// is an [`IpamError::Storage`]. Blocking.
    pub fn enter(&self) -> Result<(), IpamError> {
        if !self.registered() {
            register(&self.etcd, &self.node, self.node.ttl * 2)?;
            self.etcd.handle().spawn(keepalive(
                self.etcd.clone(),
                self.node.clone(),
                self.cancel.clone(),
            ));
        }
        self.reread()
    }

    /// Makes `ipam` (opened over this cluster's store) a node of the
    /// cluster: it allocates only inside this node's blocks and writes
    /// nothing while the node is fenced (or not yet registered). Once is
    /// enough; again is harmless.
    pub fn attach(&self, ipam: &Ipam) {
        let reads = Bindings {
            etcd: self.etcd.clone(),
            replica: self.replica.clone(),
        };
        ipam.attach_cluster(self.node.clone(), Arc::new(reads));
    }

    /// Attaches `ipam` (see [`Cluster::attach`]) and starts the watch, the claimer, the releaser and the
    /// fence reporter.
    /// `on_isolations` runs when another node changed the isolation set.
    pub fn start(
        &self,
        ipam: &Arc<Ipam>,
        events: Option<Arc<EventLog>>,
        on_isolations: Option<Box<dyn Fn() + Send + Sync>>,
    ) {
        self.attach(ipam);
        let rt = self.etcd.handle();
        let watch = Watch {
            etcd: self.etcd.clone(),
            replica: self.replica.clone(),
            node: self.node.clone(),
            ipam: Arc::downgrade(ipam),
            on_isolations,
        };
        let from = self.read_at.load(Relaxed) + 1;
        rt.spawn(Arc::new(watch).run(from, self.cancel.clone()));
        let claimer = Claimer {
            etcd: self.etcd.clone(),
            replica: self.replica.clone(),
            node: self.node.clone(),
            ipam: Arc::downgrade(ipam),
            ranked: Mutex::default(),
        };
        self.node.wake.notify_one();
        rt.spawn(Arc::new(claimer).run(self.cancel.clone()));
        let releaser = Releaser {
            etcd: self.etcd.clone(),
            replica: self.replica.clone(),
            node: self.node.clone(),
            ipam: Arc::downgrade(ipam),
        };
        rt.spawn(Arc::new(releaser).run(self.cancel.clone()));
        rt.spawn(report_fence(self.node.clone(), events, self.cancel.clone()));
        rt.spawn(super::rates::publish(
            self.etcd.clone(),
            self.node.clone(),
            self.cancel.clone(),
        ));
    }

    /// Reads everything under the prefix again (before [`Cluster::start`]:
    /// another node wrote while this one applied its config). Blocking.
    pub fn reread(&self) -> Result<(), IpamError> {
        let (kvs, rev) = self.etcd.load_all()?;
        let fresh = Replica::load(&self.etcd.keys, &kvs);
        let mut r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        *r = fresh;
        self.node.refresh(&r);
        self.read_at.store(rev, Relaxed);
        Ok(())
    }

    /// Stops the tasks and gives the node's lease back (its blocks and
    /// clients move to the others at once). Blocking, at most a second or two.
    pub fn leave(&self) {
        self.cancel.cancel();
        let mut c = self.etcd.client();
        let lease = self.node.lease.load(Relaxed);
        if let Err(e) = self.etcd.block(async move { c.lease_revoke(lease).await }) {
            tracing::warn!(error = %e, "leaving the cluster: the lease was not given back (it expires)");
        } else {
            tracing::info!(node = %self.node.name, "left the cluster");
        }
    }
}

/// Keeps `vpcbox_cluster_fenced` current and logs each change of the
/// fence in the event log.
async fn report_fence(node: Arc<Node>, events: Option<Arc<EventLog>>, cancel: CancellationToken) {
    let mut was = false;
    while pause(&cancel, Duration::from_millis(100)).await {
        let why = node.fenced();
        let now = why.is_some();
        node.stats
            .ipam
            .cluster_fenced
            .store(i64::from(now), Relaxed);
        if now == was {
            continue;
        }
        was = now;
        let msg = why.unwrap_or_else(|| format!("cluster node '{}' may write again", node.name));
        tracing::warn!(%msg, "cluster fence");
        if let Some(ev) = &events {
            ev.push(EventKind::Cluster, &msg);
        }
    }
}
