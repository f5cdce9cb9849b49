//! Several `b24act serve` nodes on one database and one portal, behind a round-robin load
//! balancer: the portal's request budget, its token refreshes and the queue are shared, so the
//! portal sees one well-behaved client; nodes killed at random lose no accepted call and send
//! no result twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use b24_emulator::{PortalSpec, WorkflowSpec, WorkflowStatus};
use store::testing::with_scratch_store;
use store::{Backend, JobState, StoreKey, StoreOptions};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{CLIENT_ID, CODE, KEY, Options, ServeSite, Server, free_addresses};

/// A loopback TCP load balancer: each connection goes to the next node that accepts it.
struct RoundRobin {
    addr: SocketAddr,
    /// Connections each node took, by index.
    served: Arc<Vec<AtomicUsize>>,
}

impl RoundRobin {
    async fn start(nodes: Vec<SocketAddr>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new(nodes.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = served.clone();
        tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            while let Ok((mut client, _)) = listener.accept().await {
                let first = next.fetch_add(1, Ordering::Relaxed);
                // A node that is down is passed over, as a load balancer's health check would.
                let mut upstream = None;
                for offset in 0..nodes.len() {
                    let index = (first + offset) % nodes.len();
                    if let Ok(stream) = TcpStream::connect(nodes[index]).await {
                        counts[index].fetch_add(1, Ordering::Relaxed);
                        upstream = Some(stream);
                        break;
                    }
                }
                let Some(mut upstream) = upstream else { continue };
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        RoundRobin { addr, served }
    }

    fn served(&self) -> Vec<usize> {
        self.served.iter().map(|count| count.load(Ordering::Relaxed)).collect()
    }
}

/// A deployment of `nodes` serve processes on `store_url`, behind a [`RoundRobin`] the portal
/// calls (the app's public URL), on a portal of the cloud's limits (2/s, burst 50) whose
/// access tokens live `token_lifetime`.
struct Cluster {
    site: ServeSite,
    balancer: RoundRobin,
    /// Each node's configuration file and address.
    configs: Vec<std::path::PathBuf>,
    servers: Vec<Option<Server>>,
}

impl Cluster {
    async fn start(store_url: &str, nodes: usize, token_lifetime: Duration) -> Cluster {
        let portal = PortalSpec {
            unlimited: false,
            rate: (2.0, 50),
            access_token_lifetime: token_lifetime,
            ..PortalSpec::default()
        };
        let options = Options {
            portal,
            store_url: Some(store_url.to_owned()),
            lease: "10s",
            max_wait: "60s",
            server: "drain_grace = \"0s\"",
            ..Options::default()
        };
        let addresses = free_addresses(nodes);
        let balancer = RoundRobin::start(addresses.clone()).await;
        // The site's address is the balancer's: it is the app's public URL and install handler.
        let site = ServeSite::at("b24act-nodes", 9, &options, balancer.addr).await;
        let configs: Vec<_> = addresses
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                let mut table: toml::Table = toml::from_str(&site.config_text).unwrap();
                sandbox::set(&mut table, "server.listen", addr.to_string());
                let path = site.dir.path().join(format!("node-{index}.toml"));
                std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
                path
            })
            .collect();
        let servers = configs.iter().map(|config| Some(Server::start(config))).collect();
        site.sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(20)).await.unwrap();
        Cluster { site, balancer, configs, servers }
    }

    /// Starts `count` workflows, one after another; returns their ids.
    async fn start_workflows(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let spec = WorkflowSpec {
                domain: self.site.sandbox.domain.clone(),
                code: CODE.into(),
                properties: serde_json::json!({"company_id": 1 + n % 5}),
                timeout_duration: 600,
                ..WorkflowSpec::default()
            };
            ids.push(self.site.sandbox.emulator.start_workflow(spec).await.unwrap().workflow_id);
        }
        ids
    }

    /// How the portal's call of workflow `id` went, once it went (the emulator dispatches in
    /// the background).
    async fn dispatched(&self, id: &str) -> Vec<b24_emulator::Delivery> {
        let (emulator, domain) = (&self.site.sandbox.emulator, &self.site.sandbox.domain);
        let within = Duration::from_secs(15);
        let state = emulator.wait_for_workflow(domain, id, within, |w| !w.deliveries.is_empty());
        state.await.unwrap().deliveries
    }

    /// Waits until every workflow of `ids` has closed.
    async fn wait_all_closed(&self, ids: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        let emulator = &self.site.sandbox.emulator;
        let domain = &self.site.sandbox.domain;
        loop {
            let waiting = ids
                .iter()
                .filter(|id| {
                    emulator.workflow(domain, id).unwrap().status == WorkflowStatus::Waiting
                })
                .count();
            if waiting == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{waiting} of {} workflows still waiting",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The event tokens the portal read two or more `bizproc.event.send` of, whatever it
    /// answered (see [`sandbox::tokens_sent_more_than_once`]).
    fn sent_more_than_once(&self) -> Vec<String> {
        let calls = self.site.sandbox.emulator.rest_calls(&self.site.sandbox.domain);
        sandbox::tokens_sent_more_than_once(&calls)
    }

    /// How many workflows the portal accepted a result for.
    fn results_taken(&self) -> HashMap<String, usize> {
        let mut taken = HashMap::new();
        for call in self.site.sandbox.emulator.rest_calls(&self.site.sandbox.domain) {
            if call.method == "bizproc.event.send"
                && call.error.is_none()
                && let Some(token) = call.event_token
            {
                *taken.entry(token).or_insert(0) += 1;
            }
        }
        taken
    }

    /// The portal's `QUERY_LIMIT_EXCEEDED` answers since `since`.
    fn refusals_since(&self, since: SystemTime) -> usize {
        let calls = self.site.sandbox.emulator.rest_calls(&self.site.sandbox.domain);
        calls
            .iter()
            .filter(|call| {
                call.at >= since && call.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED")
            })
            .count()
    }
}

/// Job counts by state, read from the shared store.
async fn job_states(store_url: &str) -> store::StateCounts {
    let options = StoreOptions::new(StoreKey::from_hex(KEY).unwrap());
    let store = store::Store::open(store_url, options).await.unwrap();
    let counts = store.state_counts().await.unwrap();
    store.close().await;
    counts
}

/// Three nodes, one portal at 2 requests/s, tokens living 4 s, 1,200 calls spread over the
/// nodes: every workflow gets its result from exactly one `event.send`, the portal refuses no
/// request after the first (the budget is shared), every token expiry costs one refresh (no
/// node spends a refresh token another already rotated), and no job is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL leg: set B24ACT_TEST_POSTGRES_URL to run it")]
async fn three_nodes_share_one_portals_budget_tokens_and_queue() {
    with_scratch_store(Backend::Postgres, "three_nodes", |scratch| async move {
        let lifetime = Duration::from_secs(4);
        let cluster = Cluster::start(&scratch.url, 3, lifetime).await;
        let since = SystemTime::now();
        let ids = cluster.start_workflows(1_200).await;
        cluster.wait_all_closed(&ids, Duration::from_secs(120)).await;
        let elapsed = since.elapsed().unwrap();

        let served = cluster.balancer.served();
        let connections: usize = served.iter().sum();
        let spread = served.iter().all(|&n| n * 5 >= connections);
        assert!(spread, "calls spread over the nodes' connections: {served:?}");
        let taken = cluster.results_taken();
        assert_eq!(taken.len(), ids.len(), "every workflow took a result");
        assert!(taken.values().all(|&n| n == 1), "a workflow took two results");
        let twice = cluster.sent_more_than_once();
        assert!(twice.is_empty(), "results sent more than once: {twice:?}");
        let refused = cluster.refusals_since(since);
        assert!(refused <= 1, "{refused} QUERY_LIMIT_EXCEEDED: the nodes share one budget");

        let refreshes = cluster.site.sandbox.emulator.oauth_requests();
        let refreshes: Vec<_> =
            refreshes.iter().filter(|r| r.grant_type == "refresh_token" && r.at >= since).collect();
        assert!(
            refreshes.iter().all(|r| r.error.is_none()),
            "a rotated token was spent twice: {refreshes:?}"
        );
        assert!(!refreshes.is_empty(), "tokens expired during the run ({elapsed:?})");
        let most = (elapsed.as_secs_f64() / lifetime.as_secs_f64()).ceil() as usize + 1;
        assert!(
            refreshes.len() <= most,
            "{} refreshes in {elapsed:?}: one per expiry at most {most}",
            refreshes.len()
        );

        let states = job_states(&scratch.url).await;
        assert_eq!(states.get(JobState::Dead), 0, "{states:?}");
        assert_eq!(states.get(JobState::Done), ids.len() as u64, "{states:?}");
        drop(cluster);
    })
    .await;
}

/// A storm of SIGKILLs while calls arrive: nodes die and come back. Every call a node
/// answered 200 ends with exactly one result the workflow took (a call that reached no node is
/// the portal's to lose: Bitrix24 never sends it again), no workflow takes two, no job is dead,
/// and each restart costs at most one refused request.
/// Starts a killed node again on its port. The port was free when the cluster started, but
/// while the node was down the kernel may have handed it to an outgoing connection of this
/// busy test run as its local port (ports picked with port 0 and ephemeral ports share a
/// range); the start is tried again while that connection lasts, at most a few seconds.
async fn restart(config: &std::path::Path) -> Server {
    let mut said = String::new();
    for _ in 0..20 {
        match Server::try_start(config) {
            Ok(server) => return server,
            Err(stderr) if stderr.contains("Address already in use") => said = stderr,
            Err(stderr) => panic!("the node did not start again:\n{stderr}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the node's port stayed taken:\n{said}")
}

async fn kill_storm(store_url: &str, nodes: usize) {
    let mut cluster = Cluster::start(store_url, nodes, Duration::from_secs(600)).await;
    let since = SystemTime::now();
    let mut ids = Vec::new();
    let mut restarts = 0;
    let mut seed = 17u64;
    for round in 0..8 {
        let started = cluster.start_workflows(60).await;
        // Mid-load: once half the round's calls were answered, the rest are in flight.
        cluster.dispatched(&started[started.len() / 2]).await;
        ids.extend(started);
        // A pseudo-random node dies mid-load and comes back (a fixed seed: the same storm
        // every run).
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let victim = (seed >> 33) as usize % nodes;
        if let Some(server) = cluster.servers[victim].take() {
            server.kill();
        }
        tokio::time::sleep(Duration::from_millis(300 + 100 * (round % 3))).await;
        cluster.servers[victim] = Some(restart(&cluster.configs[victim]).await);
        restarts += 1;
    }
    let emulator = &cluster.site.sandbox.emulator;
    let domain = &cluster.site.sandbox.domain;
    let mut accepted = Vec::new();
    for id in &ids {
        if cluster.dispatched(id).await.iter().any(|delivery| delivery.status == Some(200)) {
            accepted.push(id.clone());
        }
    }
    assert!(
        accepted.len() * 2 > ids.len(),
        "most calls reach a live node: {} of {}",
        accepted.len(),
        ids.len()
    );
    cluster.wait_all_closed(&accepted, Duration::from_secs(120)).await;

    let taken = cluster.results_taken();
    let twice: Vec<_> = taken.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "workflows that took a result twice: {twice:?}");
    for id in &accepted {
        let workflow = emulator.workflow(domain, id).unwrap();
        assert_eq!(taken.get(&workflow.event_token), Some(&1), "workflow {id}");
    }
    let states = job_states(store_url).await;
    assert_eq!(states.get(JobState::Dead), 0, "no job wrongly dead: {states:?}");
    let refused = cluster.refusals_since(since);
    assert!(refused <= restarts, "{refused} QUERY_LIMIT_EXCEEDED over {restarts} restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_on_one_sqlite_node_loses_nothing_and_sends_nothing_twice() {
    let dir = sandbox::TempDir::new("b24act-storm").unwrap();
    let url = format!("sqlite:{}/b24act.db", dir.path().display());
    kill_storm(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL leg: set B24ACT_TEST_POSTGRES_URL to run it")]
async fn a_kill_storm_on_three_postgres_nodes_loses_nothing_and_sends_nothing_twice() {
    with_scratch_store(Backend::Postgres, "kill_storm", |scratch| async move {
        kill_storm(&scratch.url, 3).await;
    })
    .await;
}

/// SIGTERM: the node stops claiming work at once but answers calls through its drain grace,
/// saying `draining` on `/health` so a load balancer moves away; a call taken then is stored,
/// and the next start runs and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_answers_calls_through_its_drain_grace_and_loses_none() {
    let options = Options { server: "drain_grace = \"3s\"", ..Options::default() };
    let site = ServeSite::new("b24act-drain", 5, &options).await;
    let mut server = Server::start(&site.config);
    site.sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(10)).await.unwrap();

    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = reqwest::get(format!("http://{}/health", site.listen)).await.unwrap();
    assert_eq!(health.status(), 503);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "draining", "{body}");

    let spec = WorkflowSpec {
        domain: site.sandbox.domain.clone(),
        code: CODE.into(),
        properties: serde_json::json!({"company_id": 1}),
        timeout_duration: 600,
        ..WorkflowSpec::default()
    };
    let started = site.sandbox.emulator.start_workflow(spec).await.unwrap();
    let (emulator, domain) = (&site.sandbox.emulator, &site.sandbox.domain);
    let within = Duration::from_secs(5);
    let dispatched = emulator
        .wait_for_workflow(domain, &started.workflow_id, within, |w| !w.deliveries.is_empty());
    let answered: Vec<_> = dispatched.await.unwrap().deliveries.iter().map(|d| d.status).collect();
    assert_eq!(answered, [Some(200)], "the call during the drain is taken");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = site.sandbox.emulator.workflow(&site.sandbox.domain, &started.workflow_id);
    assert_eq!(waiting.unwrap().status, WorkflowStatus::Waiting, "no work is done while draining");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.exited() {
        assert!(Instant::now() < deadline, "the node did not stop after its grace");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _restarted = Server::start(&site.config);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state =
            site.sandbox.emulator.workflow(&site.sandbox.domain, &started.workflow_id).unwrap();
        if state.status == WorkflowStatus::Closed {
            break;
        }
        assert!(Instant::now() < deadline, "the call taken while draining was not run: {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
