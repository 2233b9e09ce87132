//! Connection settings shared by the worker and the starter: Temporal's standard environment variables
//! (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`, `TEMPORAL_PROFILE`,
//! `TEMPORAL_CONFIG_FILE`) and profile file, with flags that override them.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use temporalio_client::envconfig::{DataSource, LoadClientConfigProfileOptions};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_common::envconfig::{ClientConfigProfile, load_client_config_profile};

/// Flags that override the environment and the profile file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// Temporal frontend address (host:port or URL). Default: TEMPORAL_ADDRESS, the profile, or
    /// localhost:7233.
    #[arg(long)]
    pub address: Option<String>,
    /// Namespace. Default: TEMPORAL_NAMESPACE, the profile, or `default`.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Profile of the config file to use (default: TEMPORAL_PROFILE or `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Client config file (TOML). Default: TEMPORAL_CONFIG_FILE or ~/.config/temporalio/temporal.toml.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Encrypt payloads (AES-256-GCM) with the keys in this file (`KEY_ID:BASE64` per line, the last
    /// encrypts). Default: STATEFUL_CODEC_KEYS_FILE, or the keys in STATEFUL_CODEC_KEYS; none: no
    /// encryption.
    #[arg(long, env = "STATEFUL_CODEC_KEYS_FILE", value_name = "FILE")]
    pub codec_keys_file: Option<PathBuf>,
    /// Compress payloads over 1 KiB with zstd (before encrypting them, when keys are set). Default:
    /// STATEFUL_CODEC_COMPRESS (`zstd`, `1` or `true`; `0`, `false`, `off` or empty: off). Compressed
    /// payloads are always read, whether this is on or not.
    #[arg(long, env = "STATEFUL_CODEC_COMPRESS", value_parser = parse_compress)]
    pub compress: bool,
}

/// `STATEFUL_CODEC_COMPRESS`: `zstd`, `1`, `true`, `yes` or `on` turn compression on; `0`, `false`,
/// `no`, `off`, `none` or nothing leave it off.
fn parse_compress(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "zstd" | "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" | "none" => Ok(false),
        other => Err(format!(
            "`{other}`: use zstd (or 1, true) to compress, or 0, false, off"
        )),
    }
}

/// Resolved connection settings.
pub struct Resolved {
    /// The merged profile (env, file, flags). Holds secrets (API key, TLS keys): never print it.
    pub profile: ClientConfigProfile,
    /// True when an address came from a flag, the environment or a file.
    pub address_configured: bool,
    /// The payload codec: compression and encryption as configured (both may be off: it still
    /// decodes compressed payloads).
    pub codec: crate::codec::Codec,
}

impl ConnectArgs {
    /// Merges flags over the environment and the profile file.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let opts = LoadClientConfigProfileOptions::builder()
            .maybe_config_source(
                self.config_file
                    .as_ref()
                    .map(|p| DataSource::Path(p.display().to_string())),
            )
            .maybe_config_file_profile(self.profile.clone())
            .build();
        let mut profile = load_client_config_profile(opts, None)
            .map_err(|e| anyhow!("cannot read the Temporal client configuration: {e}"))?;
        if let Some(a) = &self.address {
            profile.address = Some(a.clone());
        }
        if let Some(n) = &self.namespace {
            profile.namespace = Some(n.clone());
        }
        let address_configured = profile.address.is_some();
        let codec = crate::codec::Codec {
            compress: self.compress,
            aes: crate::codec::AesCodec::from_env(self.codec_keys_file.as_deref())?,
        };
        Ok(Resolved {
            profile,
            address_configured,
            codec,
        })
    }
}

impl Resolved {
    /// The address that will be used.
    pub fn address(&self) -> String {
        self.profile
            .address
            .clone()
            .unwrap_or_else(|| "localhost:7233".to_string())
    }

    /// The namespace that will be used.
    pub fn namespace(&self) -> String {
        self.profile
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string())
    }

    /// Connects.
    pub async fn connect(&self, identity: &str) -> anyhow::Result<Client> {
        let mut conn = ConnectionOptions::try_from(self.profile.clone())
            .map_err(|e| anyhow!("invalid Temporal connection settings: {e}"))?;
        conn.identity = identity.to_string();
        let connection = Connection::connect(conn).await.with_context(|| {
            format!(
                "cannot connect to Temporal at {} (set TEMPORAL_ADDRESS or --address)",
                self.address()
            )
        })?;
        // Always the codec, even with compression and encryption off: payloads written compressed
        // (while compression was on) must still read.
        // With tracing on, the SDK's tracing plugin (workers created from this client get it too).
        let opts = ClientOptions::new(self.namespace())
            .data_converter(crate::codec::data_converter(self.codec.clone()))
            .plugins(crate::telemetry::plugins())
            .build();
        Client::new(connection, opts).map_err(|e| anyhow!("cannot create the Temporal client: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    #[test]
    fn compress_is_a_flag_and_its_variable_takes_zstd_or_a_boolean() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["x"], args].concat()).map(|c| c.connect);
        assert!(parse(&["--compress"]).unwrap().compress);
        assert!(!parse(&[]).unwrap().compress);
        assert!(parse(&["--compress", "zstd"]).is_err());
        for v in ["zstd", "ZSTD", "1", "true", "on"] {
            assert_eq!(parse_compress(v), Ok(true), "{v}");
        }
        for v in ["", "0", "false", "off", "none"] {
            assert_eq!(parse_compress(v), Ok(false), "{v}");
        }
        assert!(parse_compress("gzip").unwrap_err().contains("zstd"));
    }
}
