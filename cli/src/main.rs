//! The `conductorctl` binary: everything is in the library; see `conductorctl --help`.

fn main() -> std::process::ExitCode {
    conductorctl::main()
}
