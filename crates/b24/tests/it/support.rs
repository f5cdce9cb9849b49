//! Test fixtures: an emulated portal with the app installed, clients for it, recording sinks.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::RawQuery;
use b24::rest::{
    ActivityDefinition, AppCredentials, Credentials, DomainMove, HttpClient, MoveSink, OAuthTokens,
    PortalLimiter, PropertyDefinition, PropertyType, RateLimits, RefreshedTokens, RestClient,
    RestClientBuilder, SinkFuture, TokenSink, WebhookUrl, YesNo,
};
use b24::secret::{AccessToken, ClientSecret, RefreshToken};
use b24_emulator::{
    AppSpec, Emulator, EmulatorConfig, Faults, Installation, Portal, PortalSpec, StartedWorkflow,
    WorkflowSpec, WorkflowState, WorkflowStatus,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// The reference case's action (design.md §2).
pub fn credit_check(code: &str, handler: &str) -> ActivityDefinition {
    let mut definition = ActivityDefinition::new(code, handler, "Check credit limit");
    definition.auth_user_id = Some(1);
    definition.use_subscription = Some(YesNo::Yes);
    definition.description = Some("Asks the finance system".into());
    definition.properties = Some(
        [
            ("company_id", PropertyDefinition::new("Company", PropertyType::Int).required(true)),
            ("amount", PropertyDefinition::new("Amount", PropertyType::Double).required(true)),
            (
                "mode",
                PropertyDefinition::new("Mode", PropertyType::Select)
                    .options([("strict", "Strict"), ("lenient", "Lenient")])
                    .default_value("strict"),
            ),
        ]
        .into_iter()
        .collect(),
    );
    definition.return_properties = Some(
        [
            ("available_limit", PropertyDefinition::new("Available limit", PropertyType::Double)),
            ("approval_required", PropertyDefinition::new("Approval required", PropertyType::Bool)),
        ]
        .into_iter()
        .collect(),
    );
    definition
}

/// A limiter that lets `per_second` requests through at once and every second after: no
/// pacing worth the name.
pub fn unpaced(per_second: u32) -> PortalLimiter {
    PortalLimiter::new(RateLimits {
        per_second: f64::from(per_second),
        burst: NonZeroU32::new(per_second).expect("non-zero"),
    })
}

/// A client builder on the inbound webhook at `url`.
pub fn webhook_builder(url: &str) -> RestClientBuilder {
    RestClient::builder(Credentials::Webhook(WebhookUrl::parse(url).expect("webhook url")))
}

/// Makes `calls` calls with clones of `client` at once, each its own task, and returns their
/// results in the order they were started.
pub async fn concurrently<T, Call, Fut>(client: &RestClient, calls: usize, call: Call) -> Vec<T>
where
    Call: Fn(RestClient) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..calls).map(|_| tokio::spawn(call(client.clone()))).collect();
    let mut results = Vec::with_capacity(calls);
    for task in tasks {
        results.push(task.await.expect("call task"));
    }
    results
}

/// One emulator with one portal and one installed app.
pub struct TestPortal {
    pub emu: Emulator,
    pub portal: Portal,
    pub app: AppCredentials,
    pub install: Installation,
    /// A handler URL that accepts activity calls (a 200-answering listener on 127.0.0.1).
    pub handler: String,
    /// The portal has no leaky bucket, so clients need not pace themselves.
    pub unlimited: bool,
}

impl TestPortal {
    /// A portal with no rate limit, so tests that are not about limits run at full speed.
    pub async fn start() -> TestPortal {
        TestPortal::start_with(PortalSpec { unlimited: true, ..PortalSpec::default() }).await
    }

    pub async fn start_with(spec: PortalSpec) -> TestPortal {
        let unlimited = spec.unlimited;
        let emu = Emulator::start(EmulatorConfig::default()).await.expect("emulator starts");
        let portal = emu.create_portal(spec).await.expect("portal starts");
        let registered =
            emu.register_app(AppSpec { scope: "bizproc,crm".into(), ..AppSpec::default() });
        let install =
            emu.install_app(&portal.domain, &registered.client_id).await.expect("app installs");
        let app = AppCredentials {
            client_id: registered.client_id.clone(),
            client_secret: ClientSecret::new(registered.client_secret.clone()),
            auth_server: Url::parse(&emu.control_url()).expect("the emulator's URL"),
        };
        let handler = spawn_handler().await;
        TestPortal { emu, portal, app, install, handler, unlimited }
    }

    /// The tokens the install handed out.
    pub fn tokens(&self) -> OAuthTokens {
        OAuthTokens {
            client_endpoint: Url::parse(&self.install.client_endpoint).expect("client_endpoint"),
            access_token: AccessToken::new(self.install.access_token.clone()),
            refresh_token: Some(RefreshToken::new(self.install.refresh_token.clone())),
            expires: i64::try_from(self.install.expires).ok(),
            member_id: self.install.member_id.clone(),
            domain: self.install.domain.clone(),
        }
    }

    /// A builder for an OAuth client of the installed app.
    pub fn oauth(&self) -> RestClientBuilder {
        self.oauth_with(self.tokens())
    }

    pub fn oauth_with(&self, tokens: OAuthTokens) -> RestClientBuilder {
        self.oauth_via(tokens, &self.app.auth_server)
    }

    /// [`Self::oauth_with`], refreshing at `auth_server` instead of the emulator's.
    pub fn oauth_via(&self, tokens: OAuthTokens, auth_server: &Url) -> RestClientBuilder {
        let app = AppCredentials { auth_server: auth_server.clone(), ..self.app.clone() };
        let builder = RestClient::builder(Credentials::OAuth { tokens, app })
            .http_client(HttpClient::new().expect("http client"))
            .timeout(Duration::from_secs(10));
        if !self.unlimited {
            return builder;
        }
        // A limiter starts full and paces at 2/s; against a portal without limits that only
        // slows tests that are not about limits.
        builder.limiter(unpaced(100_000))
    }

    pub fn client(&self) -> RestClient {
        self.oauth().build().expect("client builds")
    }

    /// A client on an inbound webhook of admin user 1.
    pub fn webhook(&self) -> RestClient {
        let url = self.emu.create_webhook(&self.portal.domain, 1, "bizproc").expect("webhook");
        webhook_builder(&url).timeout(Duration::from_secs(10)).build().expect("client builds")
    }

    /// The error codes of every REST call the portal recorded, in order.
    pub fn recorded_errors(&self, domain: &str) -> Vec<Option<String>> {
        self.emu.rest_calls(domain).into_iter().map(|c| c.error).collect()
    }

    /// How many REST calls to the portal failed with `code`.
    pub fn recorded_error_count(&self, code: &str) -> usize {
        let errors = self.recorded_errors(&self.portal.domain);
        errors.iter().filter(|error| error.as_deref() == Some(code)).count()
    }

    /// Injects `faults` into the portal.
    pub fn set_faults(&self, faults: Faults) {
        self.emu.set_faults(&self.portal.domain, faults).expect("faults set");
    }
}

/// A TokenSink that remembers every token set it was given.
#[derive(Default)]
pub struct RecordingSink {
    pub stored: Mutex<Vec<RefreshedTokens>>,
}

impl RecordingSink {
    pub fn all(&self) -> Vec<RefreshedTokens> {
        self.stored.lock().expect("sink lock").clone()
    }
}

impl TokenSink for RecordingSink {
    fn store<'a>(&'a self, tokens: &'a RefreshedTokens) -> SinkFuture<'a> {
        Box::pin(async move {
            // Persisting takes a while in real life; make racing callers notice if the gate leaks.
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.stored.lock().expect("sink lock").push(tokens.clone());
            Ok(())
        })
    }
}

/// A MoveSink that remembers every move.
#[derive(Default)]
pub struct RecordingMoves {
    pub moves: Mutex<Vec<DomainMove>>,
}

impl MoveSink for RecordingMoves {
    fn moved(&self, change: &DomainMove) {
        self.moves.lock().expect("moves lock").push(change.clone());
    }
}

/// A bare-bones HTTP endpoint on 127.0.0.1 that answers every request `200 OK`: the activity
/// handler the portal calls (what it receives is the intake's business, not the client's).
pub async fn spawn_handler() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind handler");
    let addr = listener.local_addr().expect("handler addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}/handler")
}

/// Polls `check` until it yields a value or `deadline` passes.
pub async fn eventually<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "condition not met within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestPortal {
    /// Starts a workflow that reaches activity `code` and waits for its result.
    pub async fn start_waiting_workflow(&self, code: &str) -> StartedWorkflow {
        let spec = WorkflowSpec {
            domain: self.portal.domain.clone(),
            code: code.to_owned(),
            properties: serde_json::json!({"company_id": 42, "amount": 1500.5}),
            ..WorkflowSpec::default()
        };
        let started = self.emu.start_workflow(spec).await.expect("workflow starts");
        assert!(started.use_subscription, "the test activities wait for event.send");
        started
    }

    /// Registers [`credit_check`] as `check_credit_limit` and starts a workflow waiting on it.
    pub async fn waiting_credit_check(&self) -> StartedWorkflow {
        let definition = credit_check("check_credit_limit", &self.handler);
        self.client().activity_add(&definition).await.expect("activity registers");
        self.start_waiting_workflow("check_credit_limit").await
    }

    /// The workflow as the portal sees it now.
    pub fn workflow(&self, workflow_id: &str) -> WorkflowState {
        self.emu.workflow(&self.portal.domain, workflow_id).expect("workflow exists")
    }

    pub fn is_closed(&self, workflow_id: &str) -> bool {
        self.workflow(workflow_id).status == WorkflowStatus::Closed
    }
}

/// A stand-in auth server that counts `/oauth/token/` requests and forwards each to the
/// emulator's, so a test can see how many refreshes actually went out.
pub struct CountingAuthServer {
    /// The auth server to give the client: `http://127.0.0.1:P/`.
    pub url: Url,
    pub requests: Arc<AtomicUsize>,
}

impl CountingAuthServer {
    pub async fn start(forward_to: String) -> CountingAuthServer {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let app = axum::Router::new().route(
            "/oauth/token/",
            axum::routing::get(move |RawQuery(query): RawQuery| {
                let (counter, http, target) = (counter.clone(), http.clone(), forward_to.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let url = format!("{target}?{}", query.unwrap_or_default());
                    let answer = http.get(url).send().await.expect("emulator's auth server");
                    let status =
                        axum::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
                    let body = answer.bytes().await.expect("auth body");
                    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind auth");
        let addr = listener.local_addr().expect("auth addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = Url::parse(&format!("http://{addr}/")).expect("auth server URL");
        CountingAuthServer { url, requests }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
