//! The sharing policy at the gateway: the engine itself is `haven_sharing::policy` (no I/O), re-exported
//! here so that the gateway's modules name it as `crate::policy`; this module adds what only the
//! gateway's command line needs.
//!
//! - [`cli`]: `haven-gateway policy check|test|explain|init`;
//! - [`starter`]: the starter bundle `policy init` writes, whose rules fit any registry.
//!
//! The language itself is documented in `docs/policy-language.md`.

pub mod cli;
pub mod starter;

pub use haven_sharing::policy::*;

#[cfg(test)]
mod tests {
    use super::DenyReason;

    #[test]
    fn every_denial_reason_has_its_value_in_the_wire_enum() {
        for reason in DenyReason::all() {
            let code = reason.code();
            let wire = haven_proto::v1::DenyReason::from_str_name(&code.to_ascii_uppercase());
            assert!(wire.is_some(), "`{code}` has no value in the wire's DenyReason enum");
        }
    }
}
