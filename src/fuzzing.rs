//! What the fuzz targets in `fuzz/` reach that is not public otherwise (issue 13.12).
//!
//! Every other parser a target drives is already public API (`Cmdline::parse_bytes`,
//! `CpuInfo::parse`, `Uevent::parse`, `pccs::exchange`…). This module adds only thin
//! entry points to private parsers, so the product's surface does not grow with the
//! fuzzing: keep it that way (a wrapper here, not a `pub` on the parser).

/// The journal file parser behind `Journal::open` (`Err` is the "corrupt" reason).
pub fn journal_parse(bytes: &[u8]) -> Result<(), String> {
    crate::journal::parse_for_fuzzing(bytes)
}

/// The modalias glob matcher (fnmatch(3) rules for the patterns
/// [`crate::inventory::modalias::supported_pattern`] accepts).
pub fn glob_match(pattern: &[u8], subject: &[u8]) -> bool {
    crate::inventory::modalias::glob_match(pattern, subject)
}

/// Feeds `input` to the `:authority` rewriter in pieces of the given sizes (0 ends
/// the list; the rest goes in one piece), then ends the stream; returns what h2 would
/// read. The output must not depend on how the input was cut.
pub fn hpack_stream(input: &[u8], cuts: &[u8]) -> Vec<u8> {
    crate::deviceplugin::authority::feed_for_fuzzing(input, cuts)
}
