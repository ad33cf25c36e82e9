//! (being implemented in this session; not registered for users until complete)

use crate::registry::Built;
use modbal_core::{ModbalError, Result};

pub fn build(_options: &toml::Table) -> Result<Built> {
    Err(ModbalError::Config(
        "method ogm_ge is not available yet".into(),
    ))
}
