//! Tests of password authentication against the in-memory registry double.

use std::sync::Arc;

use chrono::{Duration, Utc};
use ferry_registry_client::{CredentialType, CredentialsObject, DeviceId, Secret, TenantId};
use serde_json::{Map, json};

use super::password::tests::sha_secret;
use super::*;
use crate::test_util::{FakeRegistry, tenant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Hono's own bcrypt vector (SpringBasedHonoPasswordEncoderTest): `$2a$`, cost 12.
const HONO_BCRYPT: &str = "$2a$12$rcrgLZrGHkEMAMfP5atLGe4HOvI0ZdclQdWDt/6DfUcgNEphwK27i";
const HONO_BCRYPT_PASSWORD: &str = "kapua-password";

struct Fixture {
    registry: Arc<FakeRegistry>,
    tenant: TenantId,
    device: DeviceId,
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let registry = Arc::new(FakeRegistry::new());
    let tenant_id = TenantId::parse("t1")?;
    registry.add_tenant(tenant(json!({"tenant-id": "t1"}))?);
    Ok(Fixture {
        registry,
        tenant: tenant_id,
        device: DeviceId::parse("dev-1")?,
    })
}

impl Fixture {
    fn credentials(&self, enabled: bool, secrets: Vec<Secret>) {
        self.registry.add_credentials(
            &self.tenant,
            CredentialsObject {
                device_id: self.device.clone(),
                credential_type: CredentialType::HashedPassword,
                auth_id: "sensor".to_owned(),
                enabled,
                secrets,
                ext: Map::new(),
            },
        );
    }

    fn authenticator(&self, max_cost: u32) -> Authenticator {
        let config = CoreConfig {
            bcrypt_max_cost: max_cost,
            ..CoreConfig::default()
        };
        Authenticator::new(self.registry.clone(), &config)
    }
}

fn bcrypt_secret(password: &str, cost: u32) -> Result<Secret, bcrypt::BcryptError> {
    // The crate writes `$2b$`; Hono stores `$2a$`, the same algorithm.
    let hash = bcrypt::hash(password, cost)?.replacen("$2b$", "$2a$", 1);
    Ok(Secret {
        pwd_hash: Some(hash),
        hash_function: Some("bcrypt".to_owned()),
        enabled: true,
        ..Secret::default()
    })
}

#[tokio::test]
async fn username_is_split_at_the_first_at_sign() -> TestResult {
    assert_eq!(split_username("a@t1")?, ("a", TenantId::parse("t1")?));
    for bad in ["nobody", "@t1", "a@", "a@t1@x", "a@t/1"] {
        assert_eq!(
            split_username(bad),
            Err(AuthError::MalformedUsername),
            "{bad}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn sha_password_authenticates() -> TestResult {
    let f = fixture()?;
    f.credentials(
        true,
        vec![sha_secret(Some("sha-512"), Some(b"salt"), "secret")],
    );
    let device = f
        .authenticator(12)
        .authenticate_password("sensor@t1", "secret")
        .await?;
    assert_eq!(
        device,
        AuthenticatedDevice {
            tenant_id: f.tenant.clone(),
            device_id: f.device.clone(),
            auth_id: "sensor".to_owned(),
        }
    );
    let wrong = f
        .authenticator(12)
        .authenticate_password("sensor@t1", "guess")
        .await;
    assert_eq!(wrong, Err(AuthError::WrongPassword));
    Ok(())
}

#[tokio::test]
async fn unknown_credentials_and_unknown_tenant() -> TestResult {
    let f = fixture()?;
    let auth = f.authenticator(12);
    assert_eq!(
        auth.authenticate_password("sensor@t1", "x").await,
        Err(AuthError::UnknownCredentials)
    );
    assert_eq!(
        auth.authenticate_password("sensor@other", "x").await,
        Err(AuthError::UnknownCredentials)
    );
    Ok(())
}

#[tokio::test]
async fn disabled_credentials_are_refused() -> TestResult {
    let f = fixture()?;
    f.credentials(false, vec![sha_secret(None, None, "secret")]);
    let outcome = f
        .authenticator(12)
        .authenticate_password("sensor@t1", "secret")
        .await;
    assert_eq!(outcome, Err(AuthError::CredentialsDisabled));
    Ok(())
}

#[tokio::test]
async fn secrets_outside_their_validity_window_are_skipped() -> TestResult {
    let f = fixture()?;
    let now = Utc::now();
    let expired = Secret {
        not_after: Some(now - Duration::minutes(1)),
        ..sha_secret(None, None, "old")
    };
    let future = Secret {
        not_before: Some(now + Duration::minutes(1)),
        ..sha_secret(None, None, "new")
    };
    let disabled = Secret {
        enabled: false,
        ..sha_secret(None, None, "off")
    };
    f.credentials(true, vec![expired.clone(), future.clone(), disabled]);
    let auth = f.authenticator(12);
    for password in ["old", "new", "off"] {
        assert_eq!(
            auth.authenticate_password("sensor@t1", password).await,
            Err(AuthError::NoValidSecret)
        );
    }
    let current = Secret {
        not_before: Some(now - Duration::minutes(1)),
        not_after: Some(now + Duration::minutes(1)),
        ..sha_secret(None, None, "current")
    };
    f.credentials(true, vec![expired, future, current]);
    assert!(
        auth.authenticate_password("sensor@t1", "current")
            .await
            .is_ok()
    );
    assert_eq!(
        auth.authenticate_password("sensor@t1", "old").await,
        Err(AuthError::WrongPassword)
    );
    Ok(())
}

#[tokio::test]
async fn hono_bcrypt_vector_verifies() -> TestResult {
    let f = fixture()?;
    f.credentials(
        true,
        vec![Secret {
            pwd_hash: Some(HONO_BCRYPT.to_owned()),
            hash_function: Some("bcrypt".to_owned()),
            enabled: true,
            ..Secret::default()
        }],
    );
    let auth = f.authenticator(12);
    assert!(
        auth.authenticate_password("sensor@t1", HONO_BCRYPT_PASSWORD)
            .await
            .is_ok()
    );
    Ok(())
}

#[tokio::test]
async fn bcrypt_cost_above_the_maximum_is_not_computed() -> TestResult {
    let f = fixture()?;
    f.credentials(
        true,
        vec![Secret {
            pwd_hash: Some(HONO_BCRYPT.to_owned()),
            hash_function: Some("bcrypt".to_owned()),
            enabled: true,
            ..Secret::default()
        }],
    );
    let outcome = f
        .authenticator(10)
        .authenticate_password("sensor@t1", HONO_BCRYPT_PASSWORD)
        .await;
    assert_eq!(outcome, Err(AuthError::WrongPassword));
    Ok(())
}

#[tokio::test]
async fn bcrypt_success_is_cached_and_failures_are_not() -> TestResult {
    let f = fixture()?;
    let secret = bcrypt_secret("secret", 4)?;
    f.credentials(true, vec![secret.clone()]);
    let auth = f.authenticator(12);
    assert_eq!(
        auth.authenticate_password("sensor@t1", "guess").await,
        Err(AuthError::WrongPassword)
    );
    assert!(
        !auth
            .inner
            .verified
            .contains_key(&password::cache_key(&secret, "guess"))
    );
    assert!(
        auth.authenticate_password("sensor@t1", "secret")
            .await
            .is_ok()
    );
    assert!(
        auth.inner
            .verified
            .contains_key(&password::cache_key(&secret, "secret"))
    );
    // A new hash for the same password is a different key: nothing stale can match.
    let changed = bcrypt_secret("other", 4)?;
    f.credentials(true, vec![changed]);
    assert_eq!(
        auth.authenticate_password("sensor@t1", "secret").await,
        Err(AuthError::WrongPassword)
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_checks_of_one_password_share_one_bcrypt_run() -> TestResult {
    let f = fixture()?;
    f.credentials(true, vec![bcrypt_secret("secret", 6)?]);
    let auth = f.authenticator(12);
    let runs = |auth: &Authenticator| {
        auth.inner
            .bcrypt_runs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let checks = (0..20).map(|_| auth.authenticate_password("sensor@t1", "secret"));
    let outcomes = futures_util::future::join_all(checks).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(runs(&auth), 1);
    // Wrong guesses are not remembered: each one costs its own run.
    for _ in 0..2 {
        assert_eq!(
            auth.authenticate_password("sensor@t1", "guess").await,
            Err(AuthError::WrongPassword)
        );
    }
    assert_eq!(runs(&auth), 3);
    Ok(())
}

#[tokio::test]
async fn bcrypt_2b_and_2y_are_accepted() -> TestResult {
    let f = fixture()?;
    let auth = f.authenticator(12);
    for prefix in ["$2b$", "$2y$"] {
        let mut secret = bcrypt_secret("secret", 4)?;
        secret.pwd_hash = secret.pwd_hash.map(|h| h.replacen("$2a$", prefix, 1));
        f.credentials(true, vec![secret]);
        assert!(
            auth.authenticate_password("sensor@t1", "secret")
                .await
                .is_ok(),
            "{prefix}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn registry_outage_is_not_a_wrong_password() -> TestResult {
    let f = fixture()?;
    f.registry.set_unavailable(true);
    let outcome = f
        .authenticator(12)
        .authenticate_password("sensor@t1", "x")
        .await;
    assert!(matches!(outcome, Err(AuthError::RegistryUnavailable(_))));
    assert_eq!(
        outcome.err().map(|e| e.kind()),
        Some(crate::ErrorKind::Unavailable)
    );
    Ok(())
}

#[tokio::test]
async fn abandoned_bcrypt_checks_keep_their_permit_until_done() -> TestResult {
    let f = fixture()?;
    f.credentials(true, vec![bcrypt_secret("secret", 10)?]);
    let auth = f.authenticator(12);
    let permits = auth.inner.bcrypt_permits.available_permits();
    let attempt = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate_password("sensor@t1", "guess").await }
    });
    // Wait until the check holds its permit, then abandon it.
    for _ in 0..5000 {
        if auth.inner.bcrypt_permits.available_permits() < permits {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    attempt.abort();
    assert_eq!(auth.inner.bcrypt_permits.available_permits(), permits - 1);
    for _ in 0..5000 {
        if auth.inner.bcrypt_permits.available_permits() == permits {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    Err("the permit was never returned".into())
}
