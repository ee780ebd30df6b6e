//! Object storage for Tollgate's stored bytes (job artifacts, invoice PDFs): one
//! `object_store` (a local directory by default, S3 or GCS by configuration, SPEC "Jobs" →
//! Results) and short-lived signed download links. S3 and GCS sign their own URLs; for a local
//! directory links point at the gateway's `GET /v1/downloads/{id}` and carry an HMAC-SHA256
//! signature that job-intake checks, so every service that writes objects must share the
//! signing key.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Where objects are stored and how their download links are signed.
#[derive(Debug, Clone, Deserialize)]
pub struct ObjectsConfig {
    /// The object store: `local` (a directory), `s3` or `gcs`.
    pub store: StoreKind,
    /// `local`: the directory, created at start-up if missing.
    pub root: String,
    /// `s3` / `gcs`: the bucket. Credentials and region come from the provider's standard
    /// environment variables (`AWS_*`, `GOOGLE_*`).
    pub bucket: String,
    /// `local`: the HMAC-SHA256 key of download links. A secret: from the environment only.
    /// Empty: a random key per process, so links do not survive a restart and are not valid
    /// on another replica or service.
    pub signing_key: SecretString,
    /// How long a download link stays valid, seconds (1..=604800, the GCS maximum).
    pub url_ttl_secs: u64,
    /// `local`: the public URL of the gateway, which signed links point at.
    pub public_base_url: String,
}

impl ObjectsConfig {
    /// Checks the values; the error names the key under `section` (e.g. `artifacts`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if !(1..=604_800).contains(&self.url_ttl_secs) {
            return Err(format!(
                "{section}.url_ttl_secs: must be between 1 and 604800"
            ));
        }
        match self.store {
            StoreKind::Local => {
                if self.root.trim().is_empty() {
                    return Err(format!(
                        "{section}.root: must name a directory when {section}.store is local"
                    ));
                }
                let ok = url::Url::parse(&self.public_base_url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(format!("{section}.public_base_url: must be an http(s) URL"));
                }
            }
            StoreKind::S3 | StoreKind::Gcs => {
                if self.bucket.trim().is_empty() {
                    return Err(format!(
                        "{section}.bucket: must name a bucket when {section}.store is s3 or gcs"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The object store behind stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A local directory (`object_store::local::LocalFileSystem`).
    Local,
    /// Amazon S3 or an S3-compatible store.
    S3,
    /// Google Cloud Storage.
    Gcs,
}

/// A secret string: deserializes like a string, never shows in `Debug` output or logs.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret (tests set keys this way).
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

/// A download link check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("download link is invalid")]
    Invalid,
    #[error("download link has expired")]
    Expired,
}

/// A signed download link and the instant it stops working.
#[derive(Debug, Clone)]
pub struct DownloadLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The opened store and its link signer. Built once at start-up; cheap to share (`Arc`).
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// The store's own URL signer (S3, GCS); `None` for a local directory.
    signer: Option<Arc<dyn Signer>>,
    signing_key: Vec<u8>,
    url_ttl: Duration,
    public_base_url: String,
}

impl Objects {
    /// Opens the store `config` names. A local directory is created if missing; S3 and GCS
    /// take credentials from the environment. Errors: the directory cannot be created, or the
    /// bucket settings are unusable.
    pub fn open(config: &ObjectsConfig) -> anyhow::Result<Self> {
        let (store, signer): (Arc<dyn ObjectStore>, Option<Arc<dyn Signer>>) = match config.store {
            StoreKind::Local => {
                std::fs::create_dir_all(&config.root)
                    .map_err(|err| anyhow::anyhow!("root `{}`: {err}", config.root))?;
                let local =
                    LocalFileSystem::new_with_prefix(&config.root)?.with_automatic_cleanup(true);
                (Arc::new(local), None)
            }
            StoreKind::S3 => {
                let s3 = Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(&config.bucket)
                        .build()?,
                );
                (s3.clone(), Some(s3))
            }
            StoreKind::Gcs => {
                let gcs = Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(&config.bucket)
                        .build()?,
                );
                (gcs.clone(), Some(gcs))
            }
        };
        let signing_key = match config.signing_key.expose() {
            "" => {
                if signer.is_none() {
                    tracing::warn!(
                        "signing_key is empty: using a random key; download links will not \
                         survive a restart nor work on another replica or service"
                    );
                }
                rand::random::<[u8; 32]>().to_vec()
            }
            key => key.as_bytes().to_vec(),
        };
        Ok(Self {
            store,
            signer,
            signing_key,
            url_ttl: Duration::from_secs(config.url_ttl_secs),
            public_base_url: config.public_base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// True when the store signs its own URLs (S3, GCS), so objects carry their download
    /// headers themselves.
    pub fn signs_own_urls(&self) -> bool {
        self.signer.is_some()
    }

    /// Writes `bytes` at `path`. With a self-signing store the content type and disposition
    /// travel with the object (a local directory cannot keep them).
    pub async fn put(
        &self,
        path: &str,
        bytes: impl Into<PutPayload>,
        content_type: &str,
        content_disposition: &str,
    ) -> Result<(), object_store::Error> {
        let mut attributes = Attributes::new();
        if self.signer.is_some() {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            attributes.insert(
                Attribute::ContentDisposition,
                content_disposition.to_owned().into(),
            );
        }
        self.store
            .put_opts(
                &ObjectPath::from(path),
                bytes.into(),
                PutOptions {
                    attributes,
                    ..PutOptions::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<object_store::GetResult, object_store::Error> {
        self.store.get(&ObjectPath::from(path)).await
    }

    /// Removes an object. Best effort: a failure is logged and swallowed (the bytes are left
    /// orphaned in the store).
    pub async fn remove(&self, path: &str) {
        match self.store.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => tracing::error!(error = %err, path, "could not delete object"),
        }
    }

    /// A fresh download link for the object at `path` whose public id is `id` (`art_…`),
    /// valid for the configured TTL.
    pub async fn download_link(
        &self,
        id: &str,
        path: &str,
    ) -> Result<DownloadLink, object_store::Error> {
        let expires_at = Utc::now()
            + chrono::Duration::from_std(self.url_ttl).unwrap_or(chrono::Duration::seconds(300));
        let url = match &self.signer {
            Some(signer) => signer
                .signed_url(reqwest::Method::GET, &ObjectPath::from(path), self.url_ttl)
                .await?
                .to_string(),
            None => {
                let expires = expires_at.timestamp();
                let signature = sign_download(&self.signing_key, id, expires);
                format!(
                    "{}/v1/downloads/{id}?expires={expires}&signature={signature}",
                    self.public_base_url
                )
            }
        };
        Ok(DownloadLink { url, expires_at })
    }

    /// Checks a local download link with this store's key (see [`verify_download`]).
    pub fn verify(
        &self,
        id: &str,
        expires: i64,
        signature_hex: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        verify_download(&self.signing_key, id, expires, signature_hex, now)
    }
}

fn download_mac(key: &[u8], id: &str, expires: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(format!("{id}.{expires}").as_bytes());
    mac
}

/// The signature of a local download link: lowercase hex of HMAC-SHA256(`key`,
/// `"<id>.<expires>"`), `expires` in Unix seconds.
pub fn sign_download(key: &[u8], id: &str, expires: i64) -> String {
    hex::encode(download_mac(key, id, expires).finalize().into_bytes())
}

/// Checks a local download link at `now`: the signature first, compared in constant time
/// ([`LinkError::Invalid`]), then the expiry ([`LinkError::Expired`]).
pub fn verify_download(
    key: &[u8],
    id: &str,
    expires: i64,
    signature_hex: &str,
    now: DateTime<Utc>,
) -> Result<(), LinkError> {
    let signature = hex::decode(signature_hex).map_err(|_| LinkError::Invalid)?;
    download_mac(key, id, expires)
        .verify_slice(&signature)
        .map_err(|_| LinkError::Invalid)?;
    if now.timestamp() >= expires {
        return Err(LinkError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_and_expire() {
        let key = b"k";
        let sig = sign_download(key, "art_1", 100);
        let at = |s| DateTime::from_timestamp(s, 0).expect("time");
        assert_eq!(verify_download(key, "art_1", 100, &sig, at(99)), Ok(()));
        assert_eq!(
            verify_download(key, "art_1", 100, &sig, at(100)),
            Err(LinkError::Expired)
        );
        assert_eq!(
            verify_download(key, "art_2", 100, &sig, at(1)),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            verify_download(b"x", "art_1", 100, &sig, at(1)),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            verify_download(key, "art_1", 100, "zz", at(1)),
            Err(LinkError::Invalid)
        );
    }
}
