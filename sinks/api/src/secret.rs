//! Secrets and TLS files named by a config: a password or key is never written in `ripple.toml`,
//! it is read from an environment variable (`<name>_env`) or a mounted file (`<name>_file`, as
//! Kubernetes and Docker provide secrets), and it prints as `****` wherever it ends up.

use crate::ConfigError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` show `****`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Reads the secret `<key_prefix>.<name>` from `<name>_env` or `<name>_file`; `None` when neither
/// is set. A file's trailing newline is not part of the secret (`echo pw > file` writes one).
pub fn read_secret(
    key_prefix: &str,
    name: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let key = |suffix: &str| format!("{key_prefix}.{name}_{suffix}");
    match (env, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key("file"),
            format!(
                "cannot be combined with {}: give the secret one way",
                key("env")
            ),
        )),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => Ok(Some(Secret(v))),
            Err(_) => Err(ConfigError::new(
                key("env"),
                format!("names environment variable {var}, which is not set"),
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) => Ok(Some(Secret(
                v.strip_suffix("\r\n")
                    .or_else(|| v.strip_suffix('\n'))
                    .unwrap_or(&v)
                    .to_string(),
            ))),
            Err(e) => Err(ConfigError::new(
                key("file"),
                format!("cannot read {}: {e}", path.display()),
            )),
        },
        (None, None) => Ok(None),
    }
}

/// `tls = { ca_file, cert_file, key_file }`: the files a TLS client needs beyond the system's
/// trust store. Which services use TLS at all is said by the URL (`https://`, `rediss://`) or the
/// service's own mode key (`sslmode`, `kafka.tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA certificates that signed the server's; default: the system's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for services that authenticate clients by certificate (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted PKCS#8 or PKCS#1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The contents of [`TlsFiles`], read and checked.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    pub ca: Option<Vec<u8>>,
    /// Certificate and key, both PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.as_ref().map(|_| "(pem)"))
            .field("identity", &self.identity.as_ref().map(|_| "****"))
            .finish()
    }
}

impl TlsFiles {
    /// Whether no file is named.
    pub fn is_unset(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Checks the pairing of certificate and key and reads every file; errors name
    /// `<key_prefix>.tls.<file key>`.
    pub fn read(&self, key_prefix: &str) -> Result<TlsMaterial, ConfigError> {
        let key = |k: &str| format!("{key_prefix}.tls.{k}");
        let read = |k: &str, path: &Path| {
            let bytes = std::fs::read(path).map_err(|e| {
                ConfigError::new(key(k), format!("cannot read {}: {e}", path.display()))
            })?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(ConfigError::new(
                    key(k),
                    format!("{} is not a PEM file (no -----BEGIN line)", path.display()),
                ));
            }
            Ok(bytes)
        };
        let ca = self
            .ca_file
            .as_deref()
            .map(|p| read("ca_file", p))
            .transpose()?;
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read("cert_file", c)?, read("key_file", k)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    key("key_file"),
                    "is required with cert_file: a client certificate needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    key("cert_file"),
                    "is required with key_file: name the client certificate the key belongs to",
                ));
            }
        };
        Ok(TlsMaterial { ca, identity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_env_or_file_and_never_print() {
        let dir = std::env::temp_dir().join(format!("ripple-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let s = read_secret("sinks.r", "password", None, Some(&file))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s} {s:?}"), "**** ****");
        let err =
            read_secret("sinks.r", "password", Some("RIPPLE_TEST_UNSET_VAR"), None).unwrap_err();
        assert_eq!(err.key, "sinks.r.password_env");
        let err = read_secret("sinks.r", "password", Some("X"), Some(&file)).unwrap_err();
        assert_eq!(err.key, "sinks.r.password_file");
        let err = read_secret("sinks.r", "password", None, Some(&dir.join("none"))).unwrap_err();
        assert_eq!(err.key, "sinks.r.password_file");
        assert!(read_secret("k", "password", None, None).unwrap().is_none());
    }

    #[test]
    fn tls_files_pair_and_are_pem() {
        let dir = std::env::temp_dir().join(format!("ripple-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let der = dir.join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 1, 2]).unwrap();
        let ok = TlsFiles {
            ca_file: Some(pem.clone()),
            ..Default::default()
        };
        assert!(ok.read("kafka").unwrap().ca.is_some());
        let bad = TlsFiles {
            ca_file: Some(der),
            ..Default::default()
        };
        assert_eq!(bad.read("kafka").unwrap_err().key, "kafka.tls.ca_file");
        let half = TlsFiles {
            cert_file: Some(pem),
            ..Default::default()
        };
        assert_eq!(
            half.read("sinks.c").unwrap_err().key,
            "sinks.c.tls.key_file"
        );
    }
}
