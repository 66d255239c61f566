//! The coordinator agent binary: runs cycles, expires leases, promotes winners onto `main`.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("coordinator", coordinator::agent::spec)
}
