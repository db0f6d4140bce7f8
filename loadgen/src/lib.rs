//! What `loadgen` shares with the `caduceus` command line: the load options and the closed
//! loop over an embedded ledger. The workload itself (population, mix, signing) is the
//! `caduceus-workload` crate; `loadgen`'s measuring loops, sinks and reports are its binary's.

pub mod args;
pub mod embedded;
pub mod epcis;
pub mod record;
pub mod x12;

/// The progress bars' look, labelled: the demo's and `loadgen`'s alike.
pub fn bar_style(label: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(&format!(
        "{label:>10} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    ))
    .expect("template")
    .progress_chars("=> ")
}
