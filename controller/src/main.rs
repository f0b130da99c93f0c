//! `ferry-controller`: see [`ferry_controller::cli`] for the commands and
//! their exit codes.

fn main() -> std::process::ExitCode {
    ferry_controller::cli::main()
}
