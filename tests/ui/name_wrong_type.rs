use brainstate::{Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: String,
    v: Variable,
}

fn main() {}
