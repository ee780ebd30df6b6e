//! Layered configuration (STYLE "Configuration"): defaults compiled into each service →
//! `config/{APP_ENV}.toml` (optional) → environment variables with the service's prefix and
//! `__` as separator (`WORKER__AMQP__PREFETCH=200`). Services validate once after loading and
//! fail at start-up with a message that names the key.

use serde::de::DeserializeOwned;

/// A configuration that could not be loaded; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Loads `T` from the defaults (TOML text), the optional `config/{APP_ENV}.toml` file
/// (`APP_ENV` defaults to `local`) and `{PREFIX}__…` environment variables.
pub fn load<T: DeserializeOwned>(env_prefix: &str, defaults_toml: &str) -> Result<T, ConfigError> {
    let app_env = std::env::var("APP_ENV").unwrap_or_else(|_| "local".to_owned());
    config::Config::builder()
        .add_source(config::File::from_str(
            defaults_toml,
            config::FileFormat::Toml,
        ))
        .add_source(config::File::with_name(&format!("config/{app_env}")).required(false))
        .add_source(
            config::Environment::with_prefix(env_prefix)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|err| ConfigError(err.to_string()))
}

/// The compiled-in defaults alone, ignoring files and environment (tests start from these).
pub fn defaults<T: DeserializeOwned>(defaults_toml: &str) -> Result<T, ConfigError> {
    config::Config::builder()
        .add_source(config::File::from_str(
            defaults_toml,
            config::FileFormat::Toml,
        ))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|err| ConfigError(err.to_string()))
}

/// Fails with a message naming `key` unless `ok`.
pub fn require(ok: bool, key: &str, why: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!("{key}: {why}")))
    }
}

/// A service's `[group_commit]` section: how its writes are batched
/// (`tollgate_storage::group_commit::GroupCommit`, concurrent callers share one statement or
/// transaction). Used by job-intake (job submissions) and the worker (attempt starts and
/// finished attempts, each its own group commit).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct GroupCommitConfig {
    /// Writer tasks: statements or transactions in flight at once (per group commit). With
    /// one, the next batch gathers while a statement runs, so batches grow with the load;
    /// more let commits overlap where one commit is slow (a remote disk).
    pub writers: usize,
    /// Most items per statement or transaction.
    pub max_batch: usize,
    /// How long a writer with fewer than `max_batch` items waits for more after the first,
    /// milliseconds; 0 (the default) writes what is waiting at once. Every item of the batch
    /// waits up to this long, so it suits writes no client is waiting on.
    #[serde(default)]
    pub linger_ms: u64,
}

impl GroupCommitConfig {
    /// `linger_ms` as a duration.
    pub fn linger(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.linger_ms)
    }

    /// Both values must be at least 1; errors name `group_commit.writers` / `.max_batch`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require(
            self.writers > 0,
            "group_commit.writers",
            "must be at least 1",
        )?;
        require(
            self.max_batch > 0,
            "group_commit.max_batch",
            "must be at least 1",
        )
    }
}

/// A list setting (`#[serde(deserialize_with = "tollgate_runtime::config::list")]`): a TOML
/// array in the defaults or a file, or, from an environment variable, one comma-separated
/// string (`BILLING__DUNNING__RETRY_SCHEDULE_SECS=3600,86400`) or a single number (which the
/// environment source has already parsed as one). Items of the string are trimmed and empty
/// ones dropped; each is parsed with `T::from_str`.
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    use serde::Deserialize;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Raw<T> {
        Many(Vec<T>),
        Text(String),
        Number(i64),
    }
    let text = match Raw::<T>::deserialize(d)? {
        Raw::Many(items) => return Ok(items),
        Raw::Text(text) => text,
        Raw::Number(n) => n.to_string(),
    };
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.parse::<T>().map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Sample {
        http: Http,
    }
    #[derive(serde::Deserialize)]
    struct Http {
        port: u16,
        host: String,
    }

    #[derive(serde::Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "list")]
        secs: Vec<u64>,
        #[serde(deserialize_with = "list")]
        names: Vec<String>,
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_from_the_environment() {
        let defaults = "secs = [1, 2]\nnames = [\"a\"]\n";
        let cfg: Lists = load("TGLISTTEST", defaults).expect("loads");
        assert_eq!(cfg.secs, vec![1, 2]);
        assert_eq!(cfg.names, vec!["a"]);
        std::env::set_var("TGLISTTEST__SECS", "3600, 86400,");
        std::env::set_var("TGLISTTEST__NAMES", "12345");
        let cfg: Lists = load("TGLISTTEST", defaults).expect("loads");
        assert_eq!(cfg.secs, vec![3600, 86400]);
        assert_eq!(cfg.names, vec!["12345"]);
        std::env::set_var("TGLISTTEST__SECS", "60");
        let cfg: Lists = load("TGLISTTEST", defaults).expect("loads");
        assert_eq!(cfg.secs, vec![60]);
        std::env::set_var("TGLISTTEST__SECS", "1,x");
        assert!(load::<Lists>("TGLISTTEST", defaults).is_err());
        std::env::remove_var("TGLISTTEST__SECS");
        std::env::remove_var("TGLISTTEST__NAMES");
    }

    #[test]
    fn environment_overrides_defaults() {
        // A prefix no other test uses, so setting the variable cannot race another test.
        std::env::set_var("TGCFGTEST__HTTP__PORT", "9123");
        let cfg: Sample =
            load("TGCFGTEST", "[http]\nport = 80\nhost = \"0.0.0.0\"\n").expect("loads");
        assert_eq!(cfg.http.port, 9123);
        assert_eq!(cfg.http.host, "0.0.0.0");
        std::env::remove_var("TGCFGTEST__HTTP__PORT");
    }
}
