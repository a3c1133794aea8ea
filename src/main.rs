fn main() -> std::process::ExitCode {
    xp::cli::main()
}
