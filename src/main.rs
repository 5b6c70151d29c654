//! The `soarjobd` binary: everything happens in the library's `cli` module.

fn main() {
    std::process::exit(soarjobd::cli::main());
}
