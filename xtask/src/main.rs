//! xtask: kernel builds and CI for linattn (`cargo xtask <command>`). PLACEHOLDER.

fn main() {
    eprintln!("xtask: not built yet");
    std::process::exit(2);
}
