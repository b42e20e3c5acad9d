//! Secrets in settings: Kafka client properties and the HTTP token may be written as a
//! reference instead of the value itself, `${env:NAME}` (the environment variable NAME) or
//! `${file:/path}` (the file's content, its trailing newline trimmed), so that passwords stay
//! out of configuration files, command lines and shell history. References are resolved once,
//! when a command validates its settings, before anything starts; a missing variable or an
//! unreadable file is refused naming the key. A value that must start with `${` literally is
//! written `$${`. Secret values never reach logs or error messages: [`Properties`] prints the
//! value of every sensitive key ([`is_sensitive`]) as `***`, [`Secret`] prints only `***`, and
//! [`client_error`] takes them out of a Kafka client's error text.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a secret value prints as.
pub const REDACTED: &str = "***";

/// Errors resolving a reference. None of them holds the secret value.
#[derive(Debug, Error)]
pub enum SecretError {
    /// `${env:NAME}` names a variable that is not set.
    #[error("{key}: environment variable {name} is not set")]
    EnvMissing {
        /// The key whose value is the reference (`kafka.properties.sasl.password`).
        key: String,
        /// The variable.
        name: String,
    },
    /// `${env:NAME}` names a variable that is set but empty, or not valid UTF-8.
    #[error("{key}: environment variable {name} is {what}")]
    EnvUnusable {
        /// The key.
        key: String,
        /// The variable.
        name: String,
        /// `empty` or `not valid UTF-8`.
        what: &'static str,
    },
    /// `${file:PATH}` names a file that cannot be read as UTF-8 text.
    #[error("{key}: cannot read {}: {source}", path.display())]
    File {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `${file:PATH}` names an empty file.
    #[error("{key}: {} is empty", path.display())]
    FileEmpty {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// The value has the shape of a reference (`${...}`) but is not one of the two kinds.
    /// The value is not repeated: it may be a password.
    #[error("{key}: the value looks like a reference but is neither ${{env:NAME}} nor ${{file:PATH}} (write $${{ for a literal ${{)")]
    BadReference {
        /// The key.
        key: String,
    },
}

impl SecretError {
    /// The process exit code this error means: a secret file that cannot be read is a
    /// missing input, anything else a setting.
    pub fn exit_code(&self) -> i32 {
        match self {
            SecretError::File { source, .. } => crate::exit::reading(source),
            _ => crate::exit::USAGE,
        }
    }
}

/// Whether the value of the property or setting `key` is a secret: its name contains
/// `password`, `secret` or `token`, or it is `ssl.key.pem`, `sasl.jaas.config` or
/// `sasl.oauthbearer.config` (case-insensitive).
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passphrase", "secret", "token"]
        .iter()
        .any(|w| k.contains(w))
        || k.ends_with(".key.pem")
        || matches!(
            k.as_str(),
            "ssl.key.pem" | "sasl.jaas.config" | "sasl.oauthbearer.config"
        )
}

/// Resolve `value`, the value of `key` (named in errors): a reference is replaced by what it
/// refers to, `$${...}` becomes `${...}`, anything else is returned as it is.
pub fn resolve(key: &str, value: &str) -> Result<String, SecretError> {
    resolve_with(key, value, |name| std::env::var_os(name))
}

/// [`resolve`], reading variables through `env` (tests give a map instead of the process's
/// environment).
pub fn resolve_with(
    key: &str,
    value: &str,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<String, SecretError> {
    if let Some(rest) = value.strip_prefix("$${") {
        return Ok(format!("${{{rest}"));
    }
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return Ok(value.to_string());
    };
    let bad = || SecretError::BadReference {
        key: key.to_string(),
    };
    if let Some(name) = inner.strip_prefix("env:") {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(bad());
        }
        let unusable = |what| SecretError::EnvUnusable {
            key: key.to_string(),
            name: name.to_string(),
            what,
        };
        let v = env(name).ok_or_else(|| SecretError::EnvMissing {
            key: key.to_string(),
            name: name.to_string(),
        })?;
        let v = v.into_string().map_err(|_| unusable("not valid UTF-8"))?;
        if v.is_empty() {
            return Err(unusable("empty"));
        }
        Ok(v)
    } else if let Some(path) = inner.strip_prefix("file:") {
        if path.is_empty() {
            return Err(bad());
        }
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).map_err(|e| SecretError::File {
            key: key.to_string(),
            path: path.clone(),
            source: e,
        })?;
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if text.is_empty() {
            return Err(SecretError::FileEmpty {
                key: key.to_string(),
                path,
            });
        }
        Ok(text.to_string())
    } else {
        Err(bad())
    }
}

/// librdkafka client properties (`KEY = VALUE`), as the configuration and `-X` give them.
/// Its `Debug` prints the value of every sensitive key as `***`, so a settings struct that
/// holds it can be logged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// No property.
    pub fn new() -> Properties {
        Properties::default()
    }

    /// Set `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(key.into(), value.into())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every `(key, value)`, keys in order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, String> {
        self.0.iter()
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value resolved ([`resolve`]); errors name the key as `{prefix}{key}`
    /// (`kafka.properties.` for the configuration, `-X ` for flags).
    pub fn resolve(&self, prefix: &str) -> Result<Properties, SecretError> {
        self.resolve_with(prefix, |name| std::env::var_os(name))
    }

    /// [`Properties::resolve`], reading variables through `env`.
    pub fn resolve_with(
        &self,
        prefix: &str,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Properties, SecretError> {
        self.0
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve_with(&format!("{prefix}{k}"), v, &env)?)))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Properties)
    }

    /// `text` with the values of sensitive properties taken out, for messages that may quote
    /// them (a client's configuration error): every run of at least [`SCRUB_RUN`] bytes that
    /// also occurs in such a value (librdkafka quotes a part of a bad
    /// `sasl.oauthbearer.config`, not always the whole), and every shorter value where it
    /// occurs whole, becomes `***`. It may hide a few harmless words too.
    pub fn scrub(&self, text: &str) -> String {
        let t = text.as_bytes();
        let mut hidden = vec![false; t.len()];
        for secret in self
            .0
            .iter()
            .filter(|(k, v)| is_sensitive(k) && !v.is_empty())
            .map(|(_, v)| v.as_bytes())
        {
            let min = secret.len().min(SCRUB_RUN);
            for i in 0..t.len() {
                let longest = (0..secret.len())
                    .map(|j| {
                        t[i..]
                            .iter()
                            .zip(&secret[j..])
                            .take_while(|(a, b)| a == b)
                            .count()
                    })
                    .max()
                    .unwrap_or(0);
                if longest >= min {
                    hidden[i..i + longest].iter_mut().for_each(|h| *h = true);
                }
            }
        }
        // widen every hidden run to whole characters, then write `***` for each
        let mut out = String::with_capacity(text.len());
        let mut in_run = false;
        for (i, c) in text.char_indices() {
            if hidden[i..i + c.len_utf8()].iter().any(|&h| h) {
                if !in_run {
                    out.push_str(REDACTED);
                }
                in_run = true;
            } else {
                out.push(c);
                in_run = false;
            }
        }
        out
    }
}

/// The shortest run of a secret that [`Properties::scrub`] hides when it is quoted in part.
pub const SCRUB_RUN: usize = 6;

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &dyn fmt::Debug = if is_sensitive(k) { &Redacted } else { v };
                (k, shown)
            }))
            .finish()
    }
}

/// Prints `***` (no quotes) wherever a value is hidden.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<(String, String)> for Properties {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Properties {
        Properties(iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, String>> for Properties {
    fn from(m: BTreeMap<String, String>) -> Properties {
        Properties(m)
    }
}

/// One secret value (the HTTP token), already resolved. `Debug` and `Display` print `***`;
/// only [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The text of an error creating a Kafka client from `properties`, without any secret: a
/// configuration error is told by its description and key (not librdkafka's copy of the
/// value), and the value of every sensitive property is replaced by `***`.
pub fn client_error(e: &rdkafka::error::KafkaError, properties: &Properties) -> String {
    let text = match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, _) => {
            format!("client configuration error: {desc} (property {key})")
        }
        other => other.to_string(),
    };
    properties.scrub(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: BTreeMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| m.get(name).cloned()
    }

    #[test]
    fn env_references_resolve_and_missing_ones_are_named() {
        let e = env(&[("KAFKA_PASS", "hunter2"), ("EMPTY", "")]);
        assert_eq!(
            resolve_with("k", "${env:KAFKA_PASS}", &e).unwrap(),
            "hunter2"
        );
        assert_eq!(resolve_with("k", "plain", &e).unwrap(), "plain");
        assert_eq!(resolve_with("k", "", &e).unwrap(), "");
        // not a whole-value reference: taken as it is
        assert_eq!(
            resolve_with("k", "x${env:KAFKA_PASS}", &e).unwrap(),
            "x${env:KAFKA_PASS}"
        );
        assert_eq!(
            resolve_with("k", "$${env:KAFKA_PASS}", &e).unwrap(),
            "${env:KAFKA_PASS}"
        );
        let err = resolve_with("kafka.properties.sasl.password", "${env:NOPE}", &e)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "kafka.properties.sasl.password: environment variable NOPE is not set"
        );
        let err = resolve_with("http.token", "${env:EMPTY}", &e)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "http.token: environment variable EMPTY is empty");
        for bad in [
            "${env:}",
            "${vault:x}",
            "${ENV:KAFKA_PASS}",
            "${}",
            "${file:}",
        ] {
            let err = resolve_with("-X sasl.password", bad, &e)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("-X sasl.password: the value looks like a reference"),
                "{err}"
            );
            assert!(!err.contains(bad), "{err} repeats the value");
        }
    }

    #[test]
    fn file_references_resolve_trimming_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            format!("${{file:{}}}", p.display())
        };
        let e = env(&[]);
        assert_eq!(
            resolve_with("k", &write("a", "s3cret\n"), &e).unwrap(),
            "s3cret"
        );
        assert_eq!(
            resolve_with("k", &write("b", "s3cret\r\n"), &e).unwrap(),
            "s3cret"
        );
        assert_eq!(
            resolve_with("k", &write("c", "s3cret"), &e).unwrap(),
            "s3cret"
        );
        // only one trailing newline: a PEM keeps its inner and final line structure
        let pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n\n";
        assert_eq!(
            resolve_with("k", &write("d", pem), &e).unwrap(),
            &pem[..pem.len() - 1]
        );
        let err = resolve_with("ssl.key.pem", &write("e", "\n"), &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ssl.key.pem: ") && err.ends_with(" is empty"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = resolve_with(
            "kafka.properties.ssl.key.pem",
            &format!("${{file:{}}}", missing.display()),
            &e,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!(
                "kafka.properties.ssl.key.pem: cannot read {}: ",
                missing.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn properties_resolve_every_value_and_name_the_failing_key() {
        let props: Properties = [
            ("sasl.username", "viewpulse"),
            ("sasl.password", "${env:KAFKA_PASS}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = props
            .resolve_with("kafka.properties.", env(&[("KAFKA_PASS", "hunter2")]))
            .unwrap();
        assert_eq!(got.get("sasl.password"), Some("hunter2"));
        assert_eq!(got.get("sasl.username"), Some("viewpulse"));
        let err = props
            .resolve_with("kafka.properties.", env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "kafka.properties.sasl.password: environment variable KAFKA_PASS is not set"
        );
    }

    #[test]
    fn sensitive_keys() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "http.token",
            "SASL.PASSWORD",
            "ssl.key.pem",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_sensitive(k), "{k}");
        }
        for k in [
            "sasl.username",
            "security.protocol",
            "ssl.key.location",
            "ssl.certificate.pem",
            "fetch.wait.max.ms",
        ] {
            assert!(!is_sensitive(k), "{k}");
        }
    }

    #[test]
    fn debug_and_display_redact_secret_values() {
        let props: Properties = [
            ("sasl.username", "viewpulse"),
            ("sasl.password", "hunter2"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("sasl.oauthbearer.client.secret", "oauth-s3cret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shown = format!("{props:?}");
        assert_eq!(
            shown,
            r#"{"sasl.oauthbearer.client.secret": ***, "sasl.password": ***, "sasl.username": "viewpulse", "ssl.key.pem": ***}"#
        );
        let pretty = format!("{props:#?}");
        for secret in ["hunter2", "BEGIN PRIVATE", "oauth-s3cret"] {
            assert!(
                !shown.contains(secret) && !pretty.contains(secret),
                "{pretty}"
            );
        }
        let s = Secret::new("tok3n");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "tok3n");
        assert_eq!(
            props.scrub("Invalid value \"hunter2\" for sasl.password; user viewpulse"),
            "Invalid value \"***\" for sasl.password; user viewpulse"
        );
    }

    #[test]
    fn client_config_errors_lose_the_value() {
        let props: Properties = [("sasl.password".to_string(), "hunter2".to_string())]
            .into_iter()
            .collect();
        let e = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );
        assert!(
            e.to_string().contains("hunter2"),
            "rdkafka quotes the value"
        );
        let text = client_error(&e, &props);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("sasl.password"), "{text}");
        // a misspelt key is not known to be sensitive, but its value is not quoted either
        let e = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            "No such configuration property: \"sasl.pasword\"".into(),
            "sasl.pasword".into(),
            "hunter3".into(),
        );
        let text = client_error(&e, &Properties::new());
        assert!(
            !text.contains("hunter3") && text.contains("sasl.pasword"),
            "{text}"
        );
    }

    /// librdkafka quotes the tail of a bad `sasl.oauthbearer.config` when it creates the
    /// client (its message, `rdkafka_sasl_oauthbearer.c`; this build has no OpenSSL, so the
    /// real client refuses the property before parsing it); that part is hidden too.
    #[test]
    fn client_creation_errors_lose_quoted_parts_of_a_secret() {
        let props: Properties = [
            ("sasl.mechanism", "OAUTHBEARER"),
            (
                "sasl.oauthbearer.config",
                "principal=viewpulse nonsense=Sup3rS3cretV4lue",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = rdkafka::error::KafkaError::ClientCreation(
            "Unrecognized sasl.oauthbearer.config beginning at: nonsense=Sup3rS3cretV4lue".into(),
        );
        let text = client_error(&e, &props);
        assert!(
            !text.contains("S3cret") && !text.contains("V4lue"),
            "{text}"
        );
        // (the space before the quoted part is in the secret too)
        assert!(
            text.ends_with("sasl.oauthbearer.config beginning at:***"),
            "{text}"
        );
        // the scrub widens to whole characters and keeps the rest
        let props: Properties = [("sasl.password".to_string(), "é-s3cret-é".to_string())]
            .into_iter()
            .collect();
        assert_eq!(props.scrub("at: -s3cret-é; done"), "at: ***; done");
        assert_eq!(props.scrub("nothing secret"), "nothing secret");
    }
}
