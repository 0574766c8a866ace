//! `strata`: the image CLI.
fn main() {
    eprintln!("strata: no commands yet");
    std::process::exit(2);
}
