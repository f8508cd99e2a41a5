use brainstate::{Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    v: Variable,
}

fn main() {}
