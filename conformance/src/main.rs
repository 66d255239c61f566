//! `ratchet-tck-agent`: the A2A TCK's system under test (see the library). Run it in the open mode
//! on loopback, as the TCK cannot send a token:
//! `RATCHET_OPEN=1 RATCHET_LISTEN=127.0.0.1:9999 ratchet-tck-agent`.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("tck", |env| Ok(ratchet_tck_agent::spec(env)))
}
