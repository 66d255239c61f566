//! `ratchet-sandbox [plan] -- sh -c COMMAND`: the namespaces sandbox `kit::exec` uses where
//! bubblewrap is missing (see `kit::sandbox::launcher`). Found next to the agent binaries, or
//! through `RATCHET_SANDBOX_LAUNCHER`.

fn main() {
    ratchet_kit::sandbox::launcher::main()
}
