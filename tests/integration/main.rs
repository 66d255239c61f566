mod interop;
mod substrate;
mod supervisor;
mod wire;
