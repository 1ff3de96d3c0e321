//! `vitalsd --check-config`: the effective configuration, and where each referenced secret
//! would come from. Names and sources only, never a value.

use crate::{
    config::{self, Config, Location},
    secrets,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("printing the config: {0}")]
    Print(#[from] toml::ser::Error),
}

/// The text `--check-config` prints for a config that loaded.
pub fn effective(location: &Location, config: &Config) -> Result<String, Error> {
    let (mut raw, origins) = Config::load_raw(location)?;
    // Some receivers take a key in the URL's query: it is not shown.
    if let Some((url, _)) = raw.push.url.split_once('?') {
        raw.push.url = format!("{url}?<not shown>");
    }
    let mut text =
        String::from("# effective configuration (defaults, files, then VITALSD_* environment)\n");
    text.push_str(&toml::to_string(&raw)?);
    if let Some(url) = &config.push.url {
        let auth = match &config.push.auth {
            config::PushAuth::None => "no client auth".to_string(),
            config::PushAuth::Mtls { cert, .. } => {
                format!("mutual TLS as {}", cert.display())
            }
            config::PushAuth::Bearer { token } => {
                format!("a bearer token from {}{token}", config::SECRET_PREFIX)
            }
        };
        // The query is left out: some receivers take a key there.
        let shown = url.split('?').next().unwrap_or_default();
        text.push_str(&format!(
            "\n# pushes remote_write to {shown} every {:?}, with {auth}\n",
            config.push.interval
        ));
    }
    if let Some(issue) = &config.tls.issue {
        text.push_str(&format!(
            "\n# the server certificate is issued by {}/v1/{}/sign/{} for a {} key, must chain to {}, and is kept in {} (tls.cert and tls.key are not read)\n",
            issue.addr,
            issue.mount,
            issue.role,
            issue.key_type.name(),
            issue.issuer_ca.display(),
            issue.file().display()
        ));
    }
    if !origins.is_empty() {
        text.push_str("\n# where each setting came from (any other is a built-in default)\n");
        for (key, origin) in origins {
            text.push_str(&format!("#   {key}: {origin}\n"));
        }
    }
    let plan = secrets::plan(config);
    if !plan.is_empty() {
        text.push_str("\n# secrets referenced, and the source each would come from now\n");
        for (name, source) in plan {
            match source {
                Ok(source) => text.push_str(&format!("#   {name}: {source}\n")),
                Err(why) => text.push_str(&format!("#   {name}: not found ({why})\n")),
            }
        }
    }
    Ok(text)
}
