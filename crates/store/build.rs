// Rebuild when a migration is added: `sqlx::migrate!` embeds the root `migrations/<backend>/` folders at
// compile time but cannot tell cargo to watch it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
