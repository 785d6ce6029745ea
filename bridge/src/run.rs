//! Running the bridge.

use std::process::ExitCode;

use crate::Config;

pub fn main(_config: Config) -> ExitCode {
    eprintln!("error: the bridge runtime is not built yet");
    ExitCode::FAILURE
}
