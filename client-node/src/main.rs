//! `fedprofile-client`: see [`fedprofile_client::cli`].

fn main() -> std::process::ExitCode {
    fedprofile_client::cli::main()
}
