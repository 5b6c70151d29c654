//! `soarjobd demo` and `soarjobd sim`: the product end to end with built-in simulators.

use std::path::PathBuf;

use crate::cli::SimCmd;
use crate::config::Settings;
use crate::exit;

/// `soarjobd demo`.
pub async fn run(_settings: Settings, _data_dir: Option<PathBuf>, _cases: usize) -> i32 {
    eprintln!("error: the demo needs the SOAR simulator, which is not built yet");
    exit::USAGE
}

/// `soarjobd sim ...`.
pub async fn sim(_which: SimCmd) -> i32 {
    eprintln!("error: the simulators are not built yet");
    exit::USAGE
}
