//! Name → method. See the crate docs for the contract.

pub use crate::built::{parse_options, Built};
use modbal_core::{ModbalError, Result};

/// Names accepted by [`build`].
pub const METHOD_NAMES: &[&str] = &[
    "concat", "sum", "unimodal", "cal", "arm", "ibml", "udi", "ogm-ge", "mmpareto", "pmr", "mla",
    "arl",
];

/// Build the method `name` from its options.
pub fn build(name: &str, options: &toml::Table) -> Result<Built> {
    match name {
        "concat" | "sum" | "unimodal" => crate::baselines::build(name, options),
        "cal" => crate::cal::build(options),
        "arm" => crate::arm::build(options),
        "ibml" => crate::ibml::build(options),
        "udi" => crate::udi::build(options),
        "ogm-ge" => crate::ogm_ge::build(options),
        "arl" => crate::arl::build(options),
        "pmr" => crate::pmr::build(options),
        "mmpareto" => crate::mmpareto::build(options),
        "mla" => crate::mla::build(options),
        _ => Err(ModbalError::Unknown {
            kind: "method",
            name: name.to_string(),
            valid: METHOD_NAMES.join(", "),
        }),
    }
}
