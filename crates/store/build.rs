// Rebuild when a migration is added: `sqlx::migrate!` embeds this crate's `migrations/<backend>/`
// folders at compile time but cannot tell cargo to watch them.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
