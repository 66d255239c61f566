mod governance;
mod interop;
mod loop_e2e;
mod resume;
mod security_wire;
mod substrate;
mod supervisor;
mod wire;
