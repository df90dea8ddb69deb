//! Who may connect over the PostgreSQL protocol.
//!
//! With a credentials file, every connection authenticates with
//! SCRAM-SHA-256 (psql, libpq, JDBC, Npgsql, tokio-postgres and Grafana all
//! speak it; the password never crosses the wire). Without one, connections
//! are trusted, which is allowed only when multi-tenancy is off.
//!
//! The file has one `user:password` per line (`#` starts a comment). With
//! multi-tenancy on, the user name is the tenant id, the same string
//! `X-Scope-OrgID` carries on the HTTP API. There is no default password.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password, random_nonce};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use spanlake_schemas::TenantId;

/// The largest credentials file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One user's SCRAM secret: a random salt and the salted password (the
/// password itself is not kept).
#[derive(Clone)]
struct Secret {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl Secret {
    fn new(password: &str) -> Self {
        let salt = random_nonce().into_bytes();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Self { salt, salted }
    }
}

/// The users allowed to connect.
#[derive(Clone)]
pub struct Credentials {
    users: HashMap<String, Secret>,
    /// Answered for unknown users, so that they fail like a wrong password
    /// (no way to probe which users exist).
    decoy: Secret,
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<_> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Credentials").field("users", &users).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `user:password` lines from `path`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let name = path.display();
        let size = std::fs::metadata(path).map_err(|e| format!("cannot read {name}: {e}"))?.len();
        if size > MAX_FILE_BYTES {
            return Err(format!("{name} is {size} bytes; a credentials file has at most {MAX_FILE_BYTES}"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{name}: {e}"))
    }

    /// Parses `user:password` lines. Errors name the line, never a password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = number + 1;
            let Some((user, password)) = line.split_once(':') else {
                return Err(format!("line {number}: expected user:password"));
            };
            TenantId::new(user).map_err(|e| format!("line {number}: the user name is not a tenant id: {e}"))?;
            if password.is_empty() {
                return Err(format!("line {number}: user {user:?} has an empty password"));
            }
            if users.insert(user.to_owned(), Secret::new(password)).is_some() {
                return Err(format!("line {number}: user {user:?} is listed twice"));
            }
        }
        if users.is_empty() {
            return Err("no user:password line".into());
        }
        Ok(Self { users, decoy: Secret::new(&random_nonce()) })
    }
}

#[async_trait]
impl AuthSource for Credentials {
    // The trait spells the lifetime this way; async_trait needs it the same.
    #[allow(elided_lifetimes_in_paths)]
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let secret = login.user().and_then(|user| self.users.get(user)).unwrap_or(&self.decoy);
        Ok(Password::new(Some(secret.salt.clone()), secret.salted.clone()))
    }
}

/// Trust: any user, no password (only with multi-tenancy off).
pub(super) struct Trust(Arc<ConnectionManager>);

impl NoopStartupHandler for Trust {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.0))
    }
}

/// One connection's start-up: SCRAM against the credentials, or trust.
pub(super) enum Startup {
    Trust(Trust),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

impl Startup {
    /// A fresh start-up (SCRAM keeps per-connection state). The connection
    /// is registered with `connections`, so that a cancel request (psql's
    /// Ctrl-C) stops its running query.
    pub(super) fn new(credentials: Option<&Arc<Credentials>>, connections: &Arc<ConnectionManager>) -> Self {
        match credentials {
            None => Self::Trust(Trust(Arc::clone(connections))),
            Some(credentials) => {
                let scram = ScramAuth::new(Arc::clone(credentials) as Arc<dyn AuthSource>);
                let params = Arc::new(DefaultServerParameterProvider::default());
                let startup = SASLAuthStartupHandler::new(params)
                    .with_scram(scram)
                    .with_connection_manager(Arc::clone(connections));
                Self::Scram(Box::new(startup))
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Self::Trust(trust) => trust.on_startup(client, message).await,
            Self::Scram(scram) => scram.on_startup(client, message).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_name_the_bad_line_and_never_the_password() {
        let ok = Credentials::parse("# tenants\nteam-a:s3cret\n\nteam-b:other:colon\n").unwrap();
        assert_eq!(ok.users.len(), 2);
        for (text, why) in [
            ("team-a", "line 1: expected user:password"),
            ("team-a:", "line 1: user \"team-a\" has an empty password"),
            ("a:x\na:y", "line 2: user \"a\" is listed twice"),
            ("../etc:hunter2", "line 1: the user name is not a tenant id"),
            ("# nothing\n", "no user:password line"),
        ] {
            let error = Credentials::parse(text).unwrap_err();
            assert!(error.starts_with(why), "{text:?}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        assert!(!format!("{ok:?}").contains("s3cret"));
    }
}
