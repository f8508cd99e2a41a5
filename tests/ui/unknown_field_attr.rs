use brainstate::{NodeName, Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[stateful(trainable)]
    v: Variable,
}

fn main() {}
