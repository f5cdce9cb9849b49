//! Opening a store: URLs, migrations on reopen, SQLite's durability settings, clear errors.

use serde_json::json;
use store::{Backend, Error, JobState, Store, StoreKey, StoreOptions, redact_url};

use crate::support::{T0, TestDb, call, claim_one, enqueue_new, key};

store::on_both_stores!(crate::support::run =>
    migrations_are_idempotent_on_reopen_and_data_survives,);

async fn migrations_are_idempotent_on_reopen_and_data_survives(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    assert!(
        store.complete(&claimed.lease, &json!({ "kept": true }), T0).await.unwrap().is_applied()
    );
    store.close().await;

    for _ in 0..2 {
        let reopened = db.open().await;
        let job = reopened.job(id).await.unwrap().unwrap().job;
        assert_eq!((job.state, job.result), (JobState::Delivering, Some(json!({ "kept": true }))));
        reopened.close().await;
    }
    let migrations = db.raw_bytes("SELECT checksum FROM _sqlx_migrations").await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(migrations.len(), files, "each migration applied once");
}

#[tokio::test]
async fn an_unknown_scheme_is_named_without_the_password() {
    let error = Store::open("mysql://admin:hunter2@db.internal/b24act", StoreOptions::new(key()))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, Error::UnsupportedScheme { ref scheme, .. } if scheme == "mysql"),
        "{error:?}"
    );
    assert!(
        message.contains("`mysql`") && message.contains("mysql://admin:***@db.internal/b24act"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let error = Store::open("/var/lib/b24act.db", StoreOptions::new(key())).await.unwrap_err();
    assert!(matches!(error, Error::UnsupportedScheme { .. }), "{error:?}");
}

#[test]
fn urls_are_shown_without_passwords() {
    assert_eq!(
        redact_url("postgres://app:s3cret@db:5432/b24act"),
        "postgres://app:***@db:5432/b24act"
    );
    assert_eq!(redact_url("postgres://app@db/b24act"), "postgres://app@db/b24act");
    assert_eq!(
        redact_url("postgres://db/b24act?user=app&password=s3cret"),
        "postgres://db/b24act?user=app&password=***"
    );
    assert_eq!(redact_url("sqlite:/var/lib/b24act/store.db"), "sqlite:/var/lib/b24act/store.db");
    assert_eq!(Backend::from_url("postgresql://x/y").unwrap(), Backend::Postgres);
    assert_eq!(Backend::from_url("SQLITE:store.db").unwrap(), Backend::Sqlite);
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_is_a_clear_error() {
    let url = format!("sqlite:{}/no-such-dir-b24act/sub/store.db", std::env::temp_dir().display());
    let error = Store::open(&url, StoreOptions::new(key())).await.unwrap_err();
    assert!(matches!(error, Error::MissingDirectory { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-dir-b24act/sub` does not exist"), "{error}");

    let error = Store::open("sqlite::memory:", StoreOptions::new(key())).await.unwrap_err();
    assert!(matches!(error, Error::InMemory { .. }), "{error:?}");
}

#[tokio::test]
async fn a_sqlite_store_is_created_on_first_start_in_wal_mode_with_full_sync() {
    let dir = store::testing::scratch_dir("wal");
    let path = dir.join("fresh.db");
    let url = format!("sqlite:{}", path.display());

    let store = Store::open(&url, StoreOptions::new(key())).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.exists());
    store.close().await;

    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String =
        sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background_not_by_commits() {
    let dir = store::testing::scratch_dir("checkpoint");
    let path = dir.join("ckpt.db");
    let store =
        Store::open(&format!("sqlite:{}", path.display()), StoreOptions::new(key())).await.unwrap();
    // Past SQLite's 1,000-page automatic threshold several times over.
    let before = std::fs::metadata(&path).unwrap().len();
    for batch in 0..40 {
        let jobs: Vec<_> = (0..250).map(|n| call("p1", &format!("t{batch}-{n}"))).collect();
        enqueue_new(&store, &jobs, T0).await;
    }
    // With automatic checkpoints off, only the background checkpointer moves pages into the
    // database file: it must have grown, soon, without any commit doing it.
    let mut grown = false;
    for _ in 0..100 {
        if std::fs::metadata(&path).unwrap().len() > before + 1_000_000 {
            grown = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(grown, "the database file never received the WAL's pages");
}

#[test]
fn store_keys_come_from_hex_and_never_show() {
    let key = StoreKey::from_hex(&"0f".repeat(32)).unwrap();
    assert_eq!(format!("{key:?}"), "StoreKey(***)");
    assert!(StoreKey::from_hex("abc").is_err());
    assert!(StoreKey::from_hex(&"zz".repeat(32)).is_err());
    assert!(StoreKey::from_hex(&format!(" {} \n", "A0".repeat(32))).is_ok());
}
