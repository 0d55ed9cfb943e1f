//! `fedprofile-coordinator`: see [`fedprofile_coordinator::cli`].

fn main() -> std::process::ExitCode {
    fedprofile_coordinator::cli::main()
}
