//! A fresh, migrated Postgres schema per test (parallel-safe), dropped when the test ends.
//! Connections reach it through `options=-csearch_path=<schema>` in the URL.

use std::sync::OnceLock;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection};

/// The database the test schemas live in: `DATABASE_URL`'s, with `_test` appended to its name.
pub fn test_database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/usage_api".to_owned());
        let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
        let name = url.path().trim_start_matches('/').to_owned();
        url.set_path(&format!(
            "/{}_test",
            if name.is_empty() { "usage_api" } else { &name }
        ));
        let url = url.to_string();
        let create = url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                // Parallel test binaries may race to create it; losing the race is fine.
                if let Err(err) = usage_api::db::migrate::ensure_database(&create).await {
                    let text = format!("{err:#}");
                    assert!(
                        text.contains("already exists") || text.contains("duplicate key"),
                        "{text}"
                    );
                }
            });
        })
        .join()
        .expect("creating the test database");
        url
    })
}

/// A connection to `url` (a test schema's), for tasks that cannot borrow the TestDb.
pub async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .expect("connect to the test schema")
}

pub struct TestDb {
    /// URL whose connections see only this test's schema.
    pub url: String,
    schema: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let base = test_database_url();
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(base)
            .await
            .expect("connect to the test database");
        diesel_async::SimpleAsyncConnection::batch_execute(
            &mut admin,
            &format!("CREATE SCHEMA {schema}"),
        )
        .await
        .expect("create the test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        // Every connection of the test names itself after the schema, so that the test's end
        // can close those a cancelled request left in a transaction (they would hold locks
        // that DROP SCHEMA waits for).
        let url =
            format!("{base}{separator}options=-csearch_path%3D{schema}&application_name={schema}");
        usage_api::db::migrate::run(&url)
            .await
            .expect("migrate the test schema");
        TestDb { url, schema }
    }

    pub async fn conn(&self) -> AsyncPgConnection {
        connect(&self.url).await
    }

    /// The schema's name (also the `application_name` of its connections).
    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let statement = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{schema}' AND pid <> pg_backend_pid(); \
             DROP SCHEMA IF EXISTS {schema} CASCADE",
            schema = self.schema
        );
        let url = test_database_url().to_owned();
        // A plain thread: the connection wrapper drives its own runtime there.
        let _ = std::thread::spawn(move || {
            if let Ok(mut conn) =
                <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            {
                let _ = conn.batch_execute(&statement);
            }
        })
        .join();
    }
}
