//! A fresh PostgreSQL database for one deployment's nodes, on the server `--postgres-url` names:
//! created with a plain connection (`CREATE DATABASE b24act_bench_<pid>_<n>`) and dropped with its
//! connections when the deployment ends, as the store's own tests make their scratch databases.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use sqlx::{Connection, PgConnection};

/// A database of this run's own; dropped (after its nodes) when this is dropped.
pub struct ScratchDatabase {
    /// The server's URL, as given (the database it names is only used to connect).
    server: String,
    name: String,
    /// The scratch database's URL, for the nodes' `[store] url`.
    url: String,
}

impl ScratchDatabase {
    /// Creates `b24act_bench_<pid>_<n>` on `server`; fails naming the server (its password
    /// redacted) when it cannot be reached.
    pub async fn create(server: &str) -> anyhow::Result<ScratchDatabase> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "b24act_bench_{}_{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut url = url::Url::parse(server)
            .with_context(|| format!("--postgres-url {}", store::redact_url(server)))?;
        url.set_path(&name);
        let mut admin = admin(server).await?;
        execute(&mut admin, &format!("CREATE DATABASE \"{name}\"")).await?;
        admin.close().await.ok();
        Ok(ScratchDatabase { server: server.to_owned(), name, url: url.into() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = admin(&self.server).await?;
        execute(&mut admin, &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
    }
}

impl Drop for ScratchDatabase {
    /// Drops the database on a thread of its own with its own runtime, so it is gone even when
    /// the deployment ends by an error or a timeout (this may run inside the bench's runtime).
    fn drop(&mut self) {
        let dropped = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("a runtime to drop the scratch database")?
                        .block_on(self.drop_database())
                })
                .join()
        });
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("could not drop the bench's database {}: {error:#}", self.name);
            }
            Err(_) => eprintln!("could not drop the bench's database {}: it panicked", self.name),
        }
    }
}

async fn admin(server: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(server).await.with_context(|| {
        format!(
            "cannot reach PostgreSQL at {} (--postgres-url, or B24ACT_BENCH_POSTGRES_URL)",
            store::redact_url(server)
        )
    })
}

async fn execute(admin: &mut PgConnection, statement: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(admin)
        .await
        .with_context(|| statement.to_owned())?;
    Ok(())
}
