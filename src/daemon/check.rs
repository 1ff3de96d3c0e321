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
    let raw = Config::load_raw(location)?;
    let mut text =
        String::from("# effective configuration (defaults, files, then VITALSD_* environment)\n");
    text.push_str(&toml::to_string(&raw)?);
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
