//! Entry point: all work happens in the library so tests can drive it directly.
fn main() {
    std::process::exit(trivy_ecr::main_entry());
}
