//! Who may connect. Off by default (the original had no authentication and its clients must
//! keep working); when on:
//!
//! - **API keys** (`Authorization: Bearer <key>`) for servers: they may call the API, open
//!   WebSockets, and mint browser tokens. Keys are compared as SHA-256 digests in constant time,
//!   so neither a key's length nor its prefix leaks through timing.
//! - **Browser tokens**, minted by `POST /api/session`: short-lived (a minute by default),
//!   single-purpose (they open a WebSocket and nothing else) and single-use within the process
//!   that redeems them (replicas do not share what was redeemed: a stolen token could be used
//!   once per replica within its lifetime), signed with HMAC-SHA256. A browser cannot set headers on a WebSocket, so a token travels as
//!   `?token=` or as a `Sec-WebSocket-Protocol` entry `token.<token>` beside `aimcs.v1`.
//!
//! Tokens and keys never reach the logs: only the outcome does.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The subprotocol a browser offers beside its token; the server echoes it back, as browsers
/// require when they offered any.
pub const SUBPROTOCOL: &str = "aimcs.v1";

/// Prefix of a token carried as a subprotocol entry.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "token.";

/// Domain separation: a token signed for this purpose cannot be replayed as anything else.
const TOKEN_PURPOSE: &[u8] = b"aimcs ws token v1";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const PAYLOAD_LEN: usize = 1 + 8 + NONCE_LEN;

/// Authentication settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// API keys of servers.
    pub api_keys: Vec<String>,
    /// The HMAC key browser tokens are signed with.
    pub token_secret: Vec<u8>,
    /// How long a browser token is valid.
    pub token_ttl: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay secret even in debug output.
        f.debug_struct("AuthSettings")
            .field("api_keys", &format_args!("{} keys", self.api_keys.len()))
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

/// The settings cannot make a working authenticator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// Authentication on without any key would lock everyone out.
    #[error("authentication is enabled but no API key is configured")]
    NoApiKeys,
    /// A key short enough to guess.
    #[error("API keys must be at least 16 characters")]
    ShortApiKey,
    /// A signing key short enough to guess.
    #[error("the token secret must be at least 32 bytes")]
    ShortSecret,
}

/// Why a request was not authenticated. The client is told which, never given the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key and no token.
    #[error(
        "authentication required: send Authorization: Bearer <API key>, or a token from POST /api/session"
    )]
    Missing,
    /// A key that is not one of ours.
    #[error("the API key is not valid")]
    InvalidKey,
    /// A token that is not one we could have issued.
    #[error("the token is not valid")]
    InvalidToken,
    /// A token past its lifetime.
    #[error("the token has expired; get a new one from POST /api/session")]
    ExpiredToken,
    /// A token already used.
    #[error("the token has already been used; each token opens one connection")]
    ReusedToken,
}

/// A browser token and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token.
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Checks keys, mints and redeems tokens.
pub struct Authenticator {
    key_digests: Vec<[u8; 32]>,
    signer: Hmac<Sha256>,
    ttl: Duration,
    /// Nonces of redeemed tokens, until they expire: what makes a token single-use.
    // std Mutex: held for a map access only.
    redeemed: Mutex<HashMap<[u8; NONCE_LEN], u64>>,
}

impl Authenticator {
    /// An authenticator for `settings`.
    ///
    /// # Errors
    /// [`AuthConfigError`] for settings that would be unusable or unsafe.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        if settings.api_keys.is_empty() {
            return Err(AuthConfigError::NoApiKeys);
        }
        if settings.api_keys.iter().any(|key| key.len() < 16) {
            return Err(AuthConfigError::ShortApiKey);
        }
        if settings.token_secret.len() < 32 {
            return Err(AuthConfigError::ShortSecret);
        }
        let signer = Hmac::<Sha256>::new_from_slice(&settings.token_secret)
            .map_err(|_| AuthConfigError::ShortSecret)?;
        Ok(Self {
            key_digests: settings
                .api_keys
                .iter()
                .map(|key| digest(key.as_bytes()))
                .collect(),
            signer,
            ttl: settings.token_ttl,
            redeemed: Mutex::default(),
        })
    }

    /// Checks an `Authorization` header value.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without a bearer credential, [`AuthError::InvalidKey`] for a
    /// wrong one.
    pub fn check_api_key(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let key = authorization.and_then(bearer).ok_or(AuthError::Missing)?;
        let candidate = digest(key.as_bytes());
        // Every key is compared, so the time taken says nothing about which one matched.
        let matched = self.key_digests.iter().fold(false, |found, known| {
            found | constant_time_eq(known, &candidate)
        });
        if matched {
            Ok(())
        } else {
            Err(AuthError::InvalidKey)
        }
    }

    /// Mints a browser token valid from now for the configured lifetime.
    pub fn mint(&self) -> IssuedToken {
        self.mint_at(now_ms())
    }

    fn mint_at(&self, now_ms: u64) -> IssuedToken {
        let expires_at_ms =
            now_ms.saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let mut payload = [0_u8; PAYLOAD_LEN];
        payload[0] = VERSION;
        payload[1..9].copy_from_slice(&expires_at_ms.to_be_bytes());
        payload[9..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let signature = self.sign(&payload);
        IssuedToken {
            token: format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(signature)
            ),
            expires_at_ms,
        }
    }

    /// Redeems a browser token: valid, unexpired and never used before.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`], [`AuthError::ExpiredToken`] or [`AuthError::ReusedToken`].
    pub fn redeem(&self, token: &str) -> Result<(), AuthError> {
        self.redeem_at(token, now_ms())
    }

    fn redeem_at(&self, token: &str, now_ms: u64) -> Result<(), AuthError> {
        let (payload, signature) = token.split_once('.').ok_or(AuthError::InvalidToken)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::InvalidToken)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::InvalidToken)?;
        if payload.len() != PAYLOAD_LEN || payload[0] != VERSION {
            return Err(AuthError::InvalidToken);
        }
        let mut mac = self.signer.clone();
        mac.update(TOKEN_PURPOSE);
        mac.update(&payload);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::InvalidToken)?;
        let expires_at_ms = u64::from_be_bytes(
            payload[1..9]
                .try_into()
                .map_err(|_| AuthError::InvalidToken)?,
        );
        if now_ms >= expires_at_ms {
            return Err(AuthError::ExpiredToken);
        }
        let nonce: [u8; NONCE_LEN] = payload[9..]
            .try_into()
            .map_err(|_| AuthError::InvalidToken)?;
        let mut redeemed = self.redeemed.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget nonces whose tokens have expired anyway: the map stays as small as the
        // number of tokens redeemed within one lifetime.
        redeemed.retain(|_, expiry| *expiry > now_ms);
        if redeemed.insert(nonce, expires_at_ms).is_some() {
            return Err(AuthError::ReusedToken);
        }
        Ok(())
    }

    /// Makes a redeemed token usable again, for a connection refused after its token was
    /// checked (the service could not register it). Unknown tokens are ignored.
    pub fn unredeem(&self, token: &str) {
        let nonce = token
            .split_once('.')
            .and_then(|(payload, _)| URL_SAFE_NO_PAD.decode(payload).ok())
            .and_then(|payload| <[u8; NONCE_LEN]>::try_from(payload.get(9..)?).ok());
        if let Some(nonce) = nonce {
            self.redeemed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&nonce);
        }
    }

    fn sign(&self, payload: &[u8]) -> [u8; 32] {
        let mut mac = self.signer.clone();
        mac.update(TOKEN_PURPOSE);
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

/// The credential of `Bearer <credential>`, scheme compared without regard to case.
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, credential) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// The token among `Sec-WebSocket-Protocol` entries, and whether `aimcs.v1` was offered.
pub fn token_from_subprotocols(offered: &str) -> (Option<&str>, bool) {
    let entries = offered.split(',').map(str::trim);
    let token = entries
        .clone()
        .find_map(|entry| entry.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX));
    (token, entries.clone().any(|entry| entry == SUBPROTOCOL))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(&AuthSettings {
            api_keys: vec![
                "server-key-0123456789".into(),
                "other-key-0123456789".into(),
            ],
            token_secret: vec![7; 32],
            token_ttl: Duration::from_secs(60),
        })
        .unwrap()
    }

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn a_configured_key_is_accepted_in_a_bearer_header() {
        let auth = authenticator();
        assert_eq!(
            auth.check_api_key(Some("Bearer server-key-0123456789")),
            Ok(())
        );
        assert_eq!(
            auth.check_api_key(Some("bearer   other-key-0123456789 ")),
            Ok(())
        );
    }

    #[test]
    fn a_missing_or_wrong_key_is_refused() {
        let auth = authenticator();
        assert_eq!(auth.check_api_key(None), Err(AuthError::Missing));
        assert_eq!(
            auth.check_api_key(Some("Basic c2VydmVyOmtleQ==")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.check_api_key(Some("Bearer server-key-012345678")),
            Err(AuthError::InvalidKey)
        );
        assert_eq!(auth.check_api_key(Some("Bearer ")), Err(AuthError::Missing));
    }

    #[test]
    fn a_token_is_redeemed_once_within_its_lifetime() {
        let auth = authenticator();
        let token = auth.mint_at(NOW);
        assert_eq!(token.expires_at_ms, NOW + 60_000);
        assert_eq!(auth.redeem_at(&token.token, NOW + 59_999), Ok(()));
        assert_eq!(
            auth.redeem_at(&token.token, NOW + 59_999),
            Err(AuthError::ReusedToken)
        );
    }

    #[test]
    fn an_unredeemed_token_can_be_redeemed_again_and_only_it() {
        let auth = authenticator();
        let (first, second) = (auth.mint_at(NOW), auth.mint_at(NOW));
        auth.redeem_at(&first.token, NOW).unwrap();
        auth.redeem_at(&second.token, NOW).unwrap();

        auth.unredeem(&first.token);
        auth.unredeem("not a token");

        assert_eq!(auth.redeem_at(&first.token, NOW), Ok(()));
        assert_eq!(
            auth.redeem_at(&second.token, NOW),
            Err(AuthError::ReusedToken)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let auth = authenticator();
        let token = auth.mint_at(NOW);
        assert_eq!(
            auth.redeem_at(&token.token, NOW + 60_000),
            Err(AuthError::ExpiredToken)
        );
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let auth = authenticator();
        let token = auth.mint_at(NOW).token;
        let (payload, signature) = token.split_once('.').unwrap();
        // A later expiry, signed by nobody.
        let mut forged = URL_SAFE_NO_PAD.decode(payload).unwrap();
        forged[8] ^= 0xff;
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(forged));
        let other = Authenticator::new(&AuthSettings {
            token_secret: vec![8; 32],
            ..settings()
        })
        .unwrap();
        for bad in [
            forged.as_str(),
            "",
            "abc",
            "a.b",
            &other.mint_at(NOW).token,
            &token.replace('.', ""),
        ] {
            assert_eq!(
                auth.redeem_at(bad, NOW),
                Err(AuthError::InvalidToken),
                "{bad:?}"
            );
        }
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            api_keys: vec!["server-key-0123456789".into()],
            token_secret: vec![7; 32],
            token_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn unsafe_settings_are_refused() {
        assert_eq!(
            Authenticator::new(&AuthSettings {
                api_keys: vec![],
                ..settings()
            })
            .err(),
            Some(AuthConfigError::NoApiKeys)
        );
        assert_eq!(
            Authenticator::new(&AuthSettings {
                api_keys: vec!["short".into()],
                ..settings()
            })
            .err(),
            Some(AuthConfigError::ShortApiKey)
        );
        assert_eq!(
            Authenticator::new(&AuthSettings {
                token_secret: vec![1; 31],
                ..settings()
            })
            .err(),
            Some(AuthConfigError::ShortSecret)
        );
    }

    #[test]
    fn a_token_in_the_subprotocol_list_is_found_beside_aimcs_v1() {
        assert_eq!(
            token_from_subprotocols("aimcs.v1, token.abc.def"),
            (Some("abc.def"), true)
        );
        assert_eq!(token_from_subprotocols("token.abc"), (Some("abc"), false));
        assert_eq!(token_from_subprotocols("chat, superchat"), (None, false));
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let shown = format!("{:?}", settings());
        assert!(
            !shown.contains("server-key") && shown.contains("1 keys"),
            "{shown}"
        );
    }
}
