//! `edge-bridge`: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    edge_bridge::cli::main()
}
