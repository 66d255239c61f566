
mod wire;
